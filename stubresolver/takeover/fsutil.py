"""Crash-safe file replacement: a temporary file in the same directory, fsync, rename,
fsync of the directory. rename(2) replaces atomically within one file system, so a reader
sees the old file or the new one, never a half-written one; the directory fsync makes the
rename itself survive a power cut."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.stubresolver-{os.getpid()}.tmp")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_with_file(
    path: Path,
    data: bytes,
    mode: int,
    *,
    owner: tuple[int, int] | None = None,
    mtime_ns: int | None = None,
) -> None:
    """Raises OSError; a failure leaves ``path`` as it was (the temporary is removed)."""
    tmp = _temporary(path)
    _install(tmp, path, lambda: _write(tmp, data, mode, owner, mtime_ns))


def replace_with_symlink(path: Path, target: str, owner: tuple[int, int]) -> None:
    tmp = _temporary(path)

    def make() -> None:
        os.symlink(target, tmp)
        os.lchown(tmp, *owner)

    _install(tmp, path, make)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fsync_dir(path.parent)


def make_dir(path: Path, mode: int) -> None:
    """Make ``path`` (its parent must exist); an existing directory is left as it is."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    os.chmod(path, mode)  # mkdir's mode passes through the umask
    fsync_dir(path.parent)


def remove_empty_dir(path: Path) -> None:
    """Remove ``path`` if it is empty. Gone already is done; not empty means someone else
    keeps a file there now, and that file (and so the directory) is theirs to keep."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return
        raise
    fsync_dir(path.parent)


def _install(tmp: Path, path: Path, make: Callable[[], None]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a crash of an earlier run with our pid
    try:
        make()
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _write(
    tmp: Path, data: bytes, mode: int, owner: tuple[int, int] | None, mtime_ns: int | None
) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # after fchown, which clears set-id bits
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime_ns is not None:
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
