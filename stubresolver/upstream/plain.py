"""Plain DNS upstreams inside the tunnel: ``udp://IP[:port]`` and ``tcp://IP[:port]``.

UDP (RFC 1035 4.2.1): a fresh random 16-bit ID per attempt and a connected socket with a
kernel-chosen random source port (RFC 5452 section 9.2); a datagram is accepted only when
it is a response whose ID and question match (RFC 5452 section 4.1), anything else is
ignored until the deadline. A truncated answer (TC=1) is retried over TCP to the same
address and port (RFC 1035 4.2.1, RFC 7766 section 5).

TCP (RFC 1035 4.2.2, RFC 7766): two-byte length framing. For now one fresh connection per
query (no pooling or pipelining yet); correctness first.

Deadline: ``cfg.timeout`` covers the whole exchange, including a TCP retry after TC.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import TYPE_CHECKING

from stubresolver import netbind, wire
from stubresolver.errors import UpstreamError, WireError
from stubresolver.tunnel_state import TunnelState

if TYPE_CHECKING:
    from stubresolver.config import UpstreamConfig

log = logging.getLogger(__name__)

_rng = random.SystemRandom()
_MAX_MESSAGE = 65535


def _random_id() -> int:
    return _rng.randrange(0x10000)


def _query_facts(query: bytes, label: str) -> tuple[int, bytes]:
    """The caller's ID and the question key; a query we cannot read is a protocol error."""
    try:
        return wire.get_id(query), wire.question_key(query)
    except WireError as exc:
        raise UpstreamError("protocol", label, f"unreadable query: {exc}") from exc


def _is_answer(msg: bytes, msg_id: int, key: bytes) -> bool:
    """A response (QR=1) with our ID and our question (RFC 5452 section 4.1)."""
    if not wire.is_response(msg):
        return False
    try:
        return wire.get_id(msg) == msg_id and wire.question_key(msg) == key
    except WireError:
        return False


def _timeout(label: str, timeout: float) -> UpstreamError:
    return UpstreamError("timeout", label, f"no answer within {timeout:.2f}s")


async def tcp_exchange(
    state: TunnelState,
    dest: tuple[str, int],
    query: bytes,
    key: bytes,
    *,
    deadline: float,
    label: str,
) -> bytes:
    """One query over a fresh device-bound TCP connection; the answer keeps ``query``'s ID.

    ``deadline`` is in ``loop.time()`` terms and covers connect, send and receive.
    """
    loop = asyncio.get_running_loop()
    remaining = deadline - loop.time()
    if remaining <= 0:
        raise UpstreamError("timeout", label, "no time left for TCP")
    msg_id = wire.get_id(query)
    sock = await netbind.tcp_connect(state, dest, remaining, upstream=label)
    try:
        async with asyncio.timeout_at(deadline):
            await loop.sock_sendall(sock, wire.tcp_frame(query))
            deframer = wire.TcpDeframer()
            while True:
                data = await loop.sock_recv(sock, _MAX_MESSAGE)
                if not data:
                    raise UpstreamError("protocol", label, "connection closed before the answer")
                for msg in deframer.feed(data):
                    if _is_answer(msg, msg_id, key):
                        return msg
                    log.debug("%s: ignoring a TCP message that does not match the query", label)
    except TimeoutError as exc:  # before OSError: TimeoutError is an OSError subclass
        raise UpstreamError("timeout", label, f"no TCP answer within {remaining:.2f}s") from exc
    except OSError as exc:
        raise UpstreamError("connect", label, f"tcp: {netbind.errno_name(exc)}") from exc
    finally:
        sock.close()


class UdpSockets:
    """Where one upstream's UDP sockets come from.

    Today every exchange gets a fresh connected socket (a fresh random source port) and
    gives it back closed. A pool plugs in here: `acquire` may reuse a socket made under the
    same ``state.epoch``; `release` with ``reusable=False`` (timeout, ENODEV, ENETUNREACH,
    EADDRNOTAVAIL, cancellation) must drop it.
    """

    def __init__(self, dest: tuple[str, int], label: str) -> None:
        self.dest = dest
        self.label = label

    def acquire(self, state: TunnelState) -> socket.socket:
        return netbind.udp_socket(state, self.dest, upstream=self.label)

    def release(self, sock: socket.socket, *, reusable: bool) -> None:
        del reusable  # no pool yet: every socket is closed after its exchange
        sock.close()

    def close(self) -> None:
        """Drop every pooled socket (none yet)."""


class UdpUpstream:
    """``udp://IP[:port]``: UDP with TCP fallback on truncation."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.url = cfg.url
        self.dest = (cfg.host, cfg.port)
        self.timeout = cfg.timeout
        self._sockets = UdpSockets(self.dest, self.url)

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        orig_id, key = _query_facts(query, self.url)
        msg_id = _random_id()
        out = wire.with_id(query, msg_id)
        sock = self._sockets.acquire(state)
        reusable = False
        try:
            async with asyncio.timeout_at(deadline):
                await loop.sock_sendall(sock, out)
                while True:
                    answer = await loop.sock_recv(sock, _MAX_MESSAGE)
                    if _is_answer(answer, msg_id, key):
                        break
                    # Wrong ID, wrong question or not a response: maybe spoofed; keep
                    # listening until the deadline (RFC 5452 section 9.1).
                    log.debug("%s: ignoring a datagram that does not match the query", self.url)
            reusable = True
        except TimeoutError as exc:  # before OSError: TimeoutError is an OSError subclass
            raise _timeout(self.url, self.timeout) from exc
        except OSError as exc:
            # ECONNREFUSED (ICMP port unreachable on a connected socket), ENETUNREACH, ...
            raise UpstreamError("connect", self.url, f"udp: {netbind.errno_name(exc)}") from exc
        finally:
            self._sockets.release(sock, reusable=reusable)
        if wire.is_truncated(answer):
            # RFC 7766 section 5: a truncated UDP answer is retried over TCP, same server.
            answer = await tcp_exchange(
                state, self.dest, out, key, deadline=deadline, label=self.url
            )
        return wire.with_id(answer, orig_id)

    async def close(self) -> None:
        self._sockets.close()


class TcpUpstream:
    """``tcp://IP[:port]``: one fresh device-bound connection per query (for now)."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.url = cfg.url
        self.dest = (cfg.host, cfg.port)
        self.timeout = cfg.timeout

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        deadline = asyncio.get_running_loop().time() + self.timeout
        orig_id, key = _query_facts(query, self.url)
        out = wire.with_id(query, _random_id())
        answer = await tcp_exchange(state, self.dest, out, key, deadline=deadline, label=self.url)
        return wire.with_id(answer, orig_id)

    async def close(self) -> None:
        """Nothing is pooled yet."""
