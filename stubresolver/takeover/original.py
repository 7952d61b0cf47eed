"""What was found at the resolv.conf path before any change: the facts a byte-exact
restore needs. ``inspect`` only reads (lstat, readlink, read)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stubresolver.errors import TakeoverError

Kind = Literal["file", "symlink", "absent"]


@dataclass(frozen=True, slots=True)
class Original:
    """The resolv.conf path as found. For a symlink the link itself is what is restored
    (its target and owner); ``data`` is then what the target held, for the record only."""

    path: Path
    kind: Kind
    data: bytes = b""
    link_target: str | None = None
    mode: int = 0o644  # permission bits (st_mode & 0o7777)
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0


def inspect(path: Path) -> Original:
    """Read what is at ``path`` now. Raises TakeoverError when it is neither a regular
    file, a symlink nor absent (a directory, a FIFO: nothing we could restore exactly)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Original(path, "absent")
    except OSError as exc:
        raise TakeoverError(f"cannot read {path}: {exc.strerror or exc}") from None
    mode, uid, gid, mtime = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns
    try:
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(path)
            try:
                data = path.read_bytes()
            except OSError:  # a dangling link: nothing behind it, the link is what counts
                data = b""
            return Original(path, "symlink", data, target, mode, uid, gid, mtime)
        if stat.S_ISREG(info.st_mode):
            return Original(path, "file", path.read_bytes(), None, mode, uid, gid, mtime)
    except OSError as exc:
        raise TakeoverError(f"cannot read {path}: {exc.strerror or exc}") from None
    raise TakeoverError(f"{path} is neither a file nor a symlink; not taking it over")
