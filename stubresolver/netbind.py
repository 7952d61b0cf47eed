"""The only place outbound sockets are created (DESIGN.md, "Kernel binding").

Every socket is bound to the tunnel device (SO_BINDTODEVICE) AND to the tunnel address of
the destination's family, before anything is sent. Binding only the device would let a
socket keep sending after the address is gone; binding only the address leaks through the
default route when the link goes down (DESIGN.md, kernel table). Options go on before
connect(): a SYN sent before SO_BINDTODEVICE may already have left by the ISP link.

Foreign errors are translated here: a down state or a missing address family gives
UpstreamError(kind="tunnel"); a state whose epoch the monitor has left gives kind "epoch";
any OSError gives UpstreamError(kind="connect") naming the errno (ENODEV, ENETUNREACH,
EADDRNOTAVAIL, ...). A socket is closed on any failure.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket

from stubresolver.errors import UpstreamError
from stubresolver.tunnel_state import TunnelState

# <linux/in.h>: let connect() pick the port, so bind((addr, 0)) does not reserve a port per
# socket before the 4-tuple is known. Same value at SOL_IP for IPv4 and IPv6 sockets.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


def errno_name(exc: OSError) -> str:
    """``ENODEV`` for an OSError with errno 19; the message when there is no errno."""
    if exc.errno is None:
        return str(exc) or type(exc).__name__
    return errno.errorcode.get(exc.errno, str(exc.errno))


def _label(dest: tuple[str, int], upstream: str | None) -> str:
    if upstream:
        return upstream
    host, port = dest
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _prepare(
    state: TunnelState, dest: tuple[str, int], kind: int, label: str
) -> tuple[socket.socket, tuple[str, int] | tuple[str, int, int, int]]:
    """A non-blocking socket bound to the tunnel device and address; not yet connected."""
    if not state.up or not state.ifname:
        raise UpstreamError("tunnel", label, f"tunnel {state.label} down")
    if state.stale:
        # A state from before the last change: its device or address may be gone or
        # re-created, and a socket made for it would cross the epoch (STYLE.md 11).
        raise UpstreamError("epoch", label, f"tunnel changed (epoch {state.epoch} is stale)")
    host, port = dest
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise UpstreamError("connect", label, f"not an IP literal: {host!r}") from None
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    source = state.address_for(family)
    if source is None:
        raise UpstreamError("tunnel", label, f"tunnel {state.label} has no IPv{ip.version} address")
    target: tuple[str, int] | tuple[str, int, int, int] = (
        (str(ip), port) if family == socket.AF_INET else (str(ip), port, 0, 0)
    )
    bind_to: tuple[str, int] | tuple[str, int, int, int] = (
        (source, 0) if family == socket.AF_INET else (source, 0, 0, 0)
    )
    try:
        sock = socket.socket(family, kind | socket.SOCK_CLOEXEC)
    except OSError as exc:
        raise UpstreamError("connect", label, f"socket: {errno_name(exc)}") from exc
    try:
        sock.setblocking(False)
        # The device first: every later step (bind, connect, send) is then confined to it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, state.ifname.encode())
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind(bind_to)
    except OSError as exc:
        sock.close()
        raise UpstreamError(
            "connect", label, f"bind {state.ifname}/{source}: {errno_name(exc)}"
        ) from exc
    except BaseException:
        sock.close()
        raise
    return sock, target


def udp_socket(
    state: TunnelState, dest: tuple[str, int], *, upstream: str | None = None
) -> socket.socket:
    """A non-blocking UDP socket bound to the tunnel and connected to ``dest``.

    The kernel picks a random source port (bind port 0). connect() makes the kernel drop
    datagrams from any other source address or port (anti-spoofing, RFC 5452 section 4.1).
    """
    label = _label(dest, upstream)
    sock, target = _prepare(state, dest, socket.SOCK_DGRAM, label)
    try:
        sock.connect(target)
    except OSError as exc:
        sock.close()
        raise UpstreamError("connect", label, f"connect: {errno_name(exc)}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


async def tcp_connect(
    state: TunnelState, dest: tuple[str, int], timeout: float, *, upstream: str | None = None
) -> socket.socket:
    """A connected, non-blocking TCP socket bound to the tunnel.

    TCP_NODELAY (DNS messages are small and latency-bound) and TCP_USER_TIMEOUT (so a
    blackholed tunnel kills the connection in about ``timeout``, not after minutes of
    retransmissions) are set before connect. The connect itself has ``timeout`` as deadline:
    UpstreamError(kind="timeout") when it passes.
    """
    label = _label(dest, upstream)
    sock, target = _prepare(state, dest, socket.SOCK_STREAM, label)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, max(1, int(timeout * 1000)))
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, target)
    except TimeoutError as exc:  # before OSError: TimeoutError is an OSError subclass
        sock.close()
        raise UpstreamError("timeout", label, f"connect timed out after {timeout:.2f}s") from exc
    except OSError as exc:
        sock.close()
        raise UpstreamError("connect", label, f"connect: {errno_name(exc)}") from exc
    except BaseException:
        sock.close()
        raise
    return sock
