"""inotify(7) through ctypes: the standard library has no binding, and a watch on a few
directories does not justify a dependency. Managers replace resolv.conf by rename-over, so
the watch is on the directory (IN_MOVED_TO, IN_CREATE), not on the file's inode, which a
rename leaves behind."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
#: Everything by which a file in the directory can come to hold something else.
DIR_EVENTS = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
)
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class Inotify:
    """A non-blocking inotify descriptor watching directories; ``names()`` drains the
    queued events and returns the file names they were about."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd

    def watch_dir(self, directory: Path) -> None:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(directory), DIR_EVENTS)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")

    def names(self) -> set[str]:
        found: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return found
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset + _HEADER.size <= len(data):
                _wd, _mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
                found.add(os.fsdecode(raw.rstrip(b"\0")))
                offset += _HEADER.size + length

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
