"""The ``file`` backend's apply and restore plans, rendered as data (STYLE.md 7). Pure:
what was found and the listen addresses in, a tuple of steps out; runner.py executes them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from stubresolver.config import ListenAddress
from stubresolver.errors import ConfigError
from stubresolver.takeover.original import Original

#: The first line of every resolv.conf we write; how we know a file is ours.
MARKER = b"# Written by stubresolver, which owns this host's DNS (takeover.mode: file)."
OUR_MODE = 0o644  # resolv.conf is world-readable: every process's resolver reads it


@dataclass(frozen=True, slots=True)
class WriteFile:
    """Replace ``path`` atomically with a regular file (a symlink there is replaced, not
    followed). ``mtime_ns`` None: now."""

    path: Path
    data: bytes
    mode: int
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = None

    def describe(self) -> str:
        return f"write {self.path} ({len(self.data)} bytes, mode {self.mode:04o})"


@dataclass(frozen=True, slots=True)
class MakeSymlink:
    """Replace ``path`` atomically with a symlink to ``target``, owned by uid:gid."""

    path: Path
    target: str
    uid: int = 0
    gid: int = 0

    def describe(self) -> str:
        return f"link {self.path} -> {self.target}"


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove ``path`` (it was absent before we wrote it)."""

    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


Step = WriteFile | MakeSymlink | Remove


def nameservers(listen: tuple[ListenAddress, ...]) -> tuple[str, ...]:
    """The addresses resolv.conf can name: resolv.conf(5) has no port, so only listen
    addresses on port 53; a wildcard is reached on its family's loopback address."""
    found: list[str] = []
    for address in listen:
        if address.port != 53:
            continue
        ip = ipaddress.ip_address(address.host)
        if ip.is_unspecified:
            ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
        if str(ip) not in found:
            found.append(str(ip))
    return tuple(found)


def render_resolv_conf(listen: tuple[ListenAddress, ...]) -> bytes:
    """Our resolv.conf. ``edns0`` lets glibc ask for answers past 512 bytes (RFC 6891);
    ``trust-ad`` makes it keep the AD bit from us, a resolver on this host (glibc 2.31)."""
    servers = nameservers(listen)
    if not servers:
        raise ConfigError(
            "takeover.mode",
            "resolv.conf names no port: takeover needs a listen address on port 53",
        )
    lines = [
        MARKER,
        b"# The original is kept in state_dir; `stubresolver restore` puts it back.",
        *(f"nameserver {ip}".encode() for ip in servers),
        b"options edns0 trust-ad",
    ]
    return b"\n".join(lines) + b"\n"


def is_ours(data: bytes) -> bool:
    return data.startswith(MARKER)


def apply_plan(original: Original, listen: tuple[ListenAddress, ...]) -> tuple[Step, ...]:
    """One atomic replace of the path; a symlink is replaced by our file (the link itself
    is restored later, so the target file is never touched)."""
    return (WriteFile(original.path, render_resolv_conf(listen), OUR_MODE),)


def restore_plan(original: Original) -> tuple[Step, ...]:
    """Put back exactly what was found: the bytes, mode, owner and mtime of a file; the
    link and its owner for a symlink; nothing at all where there was nothing."""
    if original.kind == "symlink":
        assert original.link_target is not None  # an Original of kind symlink has one
        return (MakeSymlink(original.path, original.link_target, original.uid, original.gid),)
    if original.kind == "absent":
        return (Remove(original.path),)
    return (
        WriteFile(
            original.path,
            original.data,
            original.mode,
            original.uid,
            original.gid,
            original.mtime_ns,
        ),
    )
