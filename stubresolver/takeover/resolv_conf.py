"""The resolv.conf we write: one ``nameserver`` per listen address on port 53 and the
options glibc needs to use it well. Pure."""

from __future__ import annotations

import ipaddress

from stubresolver.config import ListenAddress
from stubresolver.errors import ConfigError

#: The first line of every resolv.conf we write; how we know a file is ours.
MARKER = b"# Written by stubresolver, which owns this host's DNS (takeover)."
OUR_MODE = 0o644  # resolv.conf is world-readable: every process's resolver reads it


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


def render(listen: tuple[ListenAddress, ...]) -> bytes:
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
