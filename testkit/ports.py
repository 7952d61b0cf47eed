"""Loopback ports for the servers the tests and the bench start."""

from __future__ import annotations

import socket


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` (kernel-chosen, then released).

    DNS servers listen on both transports of one port (RFC 7766 section 5: TCP is as
    mandatory as UDP), so a port free for TCP alone is not enough. The port is released
    before the caller binds it: a small race, harmless on a private loopback address.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on {host}")


def free_ports(host: str, count: int) -> list[int]:
    """``count`` distinct ports, each free for UDP and TCP on ``host``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(host)
        if port not in ports:  # the kernel may hand a released port out again
            ports.append(port)
    return ports


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0
