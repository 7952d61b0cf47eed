"""Plain DNS upstreams inside the tunnel: ``udp://IP[:port]`` and ``tcp://IP[:port]``.

UDP (RFC 1035 4.2.1): a fresh random 16-bit ID per query, sent on a random one of a pool of
short-lived connected sockets with kernel-chosen random source ports (RFC 5452 9.2, see
POOL_SIZE); a
datagram is accepted only when it is a response whose ID and question match a query waiting
on that socket (RFC 5452 4.1), anything else is ignored until the deadline. A truncated
answer (TC=1) is retried over TCP to the same address and port (RFC 1035 4.2.1, RFC 7766 section 5).

TCP (RFC 1035 4.2.2, RFC 7766): two-byte length framing. For now one fresh connection per
query (no pooling or pipelining yet); correctness first.

Deadline: ``cfg.timeout`` covers the whole exchange, including a TCP retry after TC.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from typing import TYPE_CHECKING

from stubresolver import netbind, wire
from stubresolver.errors import UpstreamError, WireError
from stubresolver.randomness import random_below, random_id
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.base import Done, Withdraw, settle_from_task, settle_future

if TYPE_CHECKING:
    from stubresolver.config import UpstreamConfig

log = logging.getLogger(__name__)

_MAX_MESSAGE = 65535


def _nothing() -> None:
    """The withdraw function of a query that already completed."""


def _query_facts(query: bytes, label: str) -> tuple[int, bytes]:
    """The caller's ID and the question key; a query we cannot read is a protocol error."""
    try:
        return wire.get_id(query), wire.question_key(query)
    except WireError as exc:
        raise UpstreamError("protocol", label, f"unreadable query: {exc}") from exc


def _is_answer(msg: bytes, msg_id: int, key: bytes) -> bool:
    """A response (QR=1) with our ID and our question (RFC 5452 section 4.1)."""
    return (
        len(msg) >= wire.HEADER_LEN
        and bool(msg[2] & 0x80)
        and (msg[0] << 8 | msg[1]) == msg_id
        and wire.has_question(msg, key)
    )


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


async def tcp_query(
    state: TunnelState,
    dest: tuple[str, int],
    query: bytes,
    key: bytes,
    orig_id: int,
    deadline: float,
    label: str,
) -> bytes:
    """`tcp_exchange` under a fresh random wire ID; the answer carries ``orig_id`` again."""
    out = wire.with_id(query, random_id())
    answer = await tcp_exchange(state, dest, out, key, deadline=deadline, label=label)
    return wire.with_id(answer, orig_id)


# Source ports (RFC 5452 9.2, 10). Each socket is connected on its own kernel-chosen random
# port; a query goes out on a random one of up to POOL_SIZE under a random ID, so a blind
# spoofer must guess port and ID. A socket carries at most MAX_USES queries and is used for
# at most MAX_AGE seconds, then leaves the rotation and closes once its last answer is in:
# a port learned by a side channel (SAD DNS scans for seconds) is gone before it helps, and
# 60 consecutive queries go out on 60 ports. A fresh socket for every query, as unbound
# does, would cost about 15 us of CPU each (socket, SO_BINDTODEVICE, bind, connect, epoll,
# close: bench/udp_socket_cost.py) on a forward of about 40 us; MAX_USES spreads it.
POOL_SIZE = 64
MAX_USES = 4
MAX_AGE = 10.0
# How often a pool looks for queries past their deadline (seconds).
SWEEP_INTERVAL = 0.05


# A query waiting on a pooled socket: (question key, completion, deadline, its timeout).
_Pending = tuple[bytes, "Done", float, float]


class _PooledSocket:
    __slots__ = ("born", "pending", "sock", "uses")

    def __init__(self, sock: socket.socket, born: float) -> None:
        self.sock = sock
        self.born = born
        self.uses = 0
        # wire ID -> (question key, completion callback, deadline, timeout for the message)
        self.pending: dict[int, _Pending] = {}


class UdpPool:
    """One upstream's UDP sockets, made under one tunnel epoch and read with add_reader.

    Answers are matched to queries by (socket, ID, question); anything else is ignored, as
    a spoofing attempt or a late answer to a query that already timed out. Every socket is
    dropped when the epoch changes and after an error that says the path is gone (ENODEV,
    ENETUNREACH, EADDRNOTAVAIL: DESIGN.md kernel table).

    The core is callback-based (`send`): a forwarded query costs no task and no future, which
    was a third of the forwarding CPU; `exchange` wraps it for awaiting callers.
    """

    def __init__(self, dest: tuple[str, int], label: str, size: int = POOL_SIZE) -> None:
        self.dest = dest
        self.label = label
        self.size = size
        self._socks: list[_PooledSocket] = []  # in rotation
        self._retiring: set[_PooledSocket] = set()  # spent: closed when their answers are in
        self._epoch: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._buf = bytearray(_MAX_MESSAGE)
        self._view = memoryview(self._buf)

    @property
    def open_sockets(self) -> int:
        return len(self._socks) + len(self._retiring)

    def _pick(self, state: TunnelState) -> _PooledSocket:
        loop = asyncio.get_running_loop()
        if state.epoch != self._epoch or loop is not self._loop:
            self.close()
            self._epoch = state.epoch
            self._loop = loop
        if len(self._socks) < self.size:
            return self._open(state)
        pooled = self._socks[random_below(len(self._socks))]
        if loop.time() - pooled.born >= MAX_AGE:
            self._retire(pooled)
            return self._open(state)
        return pooled

    def _retire(self, pooled: _PooledSocket) -> None:
        """Take a socket out of the rotation: its port carries no new query (RFC 5452 10),
        and it closes as soon as no answer is awaited on it."""
        if pooled in self._socks:
            self._socks.remove(pooled)
            self._retiring.add(pooled)
        self._retire_if_spent(pooled)

    def _retire_if_spent(self, pooled: _PooledSocket) -> bool:
        if pooled in self._retiring and not pooled.pending:
            self._drop(pooled, None)
            return True
        return False

    def _open(self, state: TunnelState) -> _PooledSocket:
        sock = netbind.udp_socket(state, self.dest, upstream=self.label)
        pooled = _PooledSocket(sock, asyncio.get_running_loop().time())
        try:
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, pooled)
        except BaseException:
            sock.close()
            raise
        self._socks.append(pooled)
        return pooled

    def _readable(self, pooled: _PooledSocket) -> None:
        sock = pooled.sock
        while True:
            try:
                size = sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ECONNREFUSED (ICMP port unreachable), ENETUNREACH, ENODEV, ...: the path
                # to this upstream is broken for every query on this socket.
                error = UpstreamError("connect", self.label, f"udp: {netbind.errno_name(exc)}")
                self._drop(pooled, error)
                return
            if size < wire.HEADER_LEN:
                continue
            msg = bytes(self._view[:size])
            msg_id = (msg[0] << 8) | msg[1]
            entry = pooled.pending.get(msg_id)
            if entry is None or not _is_answer(msg, msg_id, entry[0]):
                log.debug("%s: ignoring a datagram that does not match a query", self.label)
                continue
            del pooled.pending[msg_id]
            entry[1](msg, None)
            if self._retire_if_spent(pooled):
                return

    def _drop(self, pooled: _PooledSocket, error: UpstreamError | None) -> None:
        if pooled in self._socks:
            self._socks.remove(pooled)
        self._retiring.discard(pooled)
        # No running loop (closing at exit) or already closed: nothing to unregister.
        with contextlib.suppress(RuntimeError, ValueError, OSError):
            asyncio.get_running_loop().remove_reader(pooled.sock.fileno())
        pooled.sock.close()
        pending, pooled.pending = pooled.pending, {}
        failure = error or UpstreamError("epoch", self.label, "socket closed (tunnel changed)")
        for entry in pending.values():
            entry[1](None, failure)

    def send(
        self, query: bytes, key: bytes, state: TunnelState, deadline: float, done: Done
    ) -> Withdraw:
        """Send ``query`` (any ID) on a pooled socket; ``done`` is called exactly once, with
        the answer (carrying our wire ID) or an UpstreamError (timeout, connect, epoch),
        unless the returned function is called first to withdraw the query."""
        try:
            pooled = self._pick(state)
        except UpstreamError as exc:
            done(None, exc)
            return _nothing
        msg_id = random_id()
        while msg_id in pooled.pending:
            msg_id = random_id()
        loop = asyncio.get_running_loop()
        entry = (key, done, deadline, deadline - loop.time())
        pooled.pending[msg_id] = entry
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)
        pooled.uses += 1
        if pooled.uses >= MAX_USES:
            self._retire(pooled)  # this query is its last
        try:
            pooled.sock.send(wire.with_id(query, msg_id))
        except (BlockingIOError, InterruptedError):
            pass  # the socket buffer is full: as lost on the wire; the deadline answers
        except OSError as exc:
            error = UpstreamError("connect", self.label, f"udp: {netbind.errno_name(exc)}")
            self._drop(pooled, error)
            return _nothing
        return functools.partial(self._withdraw, pooled, msg_id, entry)

    def _sweep(self) -> None:
        """Fail every query past its deadline. One timer per pool instead of one per query
        (a TimerHandle per forwarded query was a measurable share of its CPU); deadlines
        are met to within SWEEP_INTERVAL."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiting = False
        for pooled in [*self._socks, *self._retiring]:
            expired = [i for i, entry in pooled.pending.items() if entry[2] <= now]
            for msg_id in expired:
                entry = pooled.pending.pop(msg_id)
                entry[1](None, _timeout(self.label, entry[3]))
            if expired:
                self._retire_if_spent(pooled)
            waiting = waiting or bool(pooled.pending)
        if waiting and self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep)

    def _withdraw(self, pooled: _PooledSocket, msg_id: int, entry: _Pending) -> None:
        if pooled.pending.get(msg_id) is entry:
            del pooled.pending[msg_id]
            self._retire_if_spent(pooled)

    async def exchange(
        self, query: bytes, key: bytes, state: TunnelState, deadline: float
    ) -> bytes:
        """`send` for awaiting callers."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        withdraw = self.send(query, key, state, deadline, functools.partial(settle_future, future))
        try:
            return await future
        except asyncio.CancelledError:
            withdraw()
            raise

    def close(self) -> None:
        """Drop every socket; queries waiting on them fail with kind ``epoch``."""
        for pooled in [*self._socks, *self._retiring]:
            self._drop(pooled, None)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class _Retry:
    """The TCP retry of one UDP exchange after TC=1, and the withdraw of both."""

    __slots__ = ("done", "label", "task", "withdraw_udp", "withdrawn")

    def __init__(self, done: Done, label: str) -> None:
        self.done = done
        self.label = label
        self.task: asyncio.Task[bytes] | None = None
        self.withdraw_udp: Withdraw = _nothing
        self.withdrawn = False

    def settle(self, task: asyncio.Task[bytes]) -> None:
        if not self.withdrawn:
            settle_from_task(self.done, self.label, task)

    def withdraw(self) -> None:
        self.withdrawn = True
        self.withdraw_udp()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # tcp_exchange closes its socket on the way out


class UdpUpstream:
    """``udp://IP[:port]``: pooled UDP with TCP fallback on truncation."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.url = cfg.url
        self.dest = (cfg.host, cfg.port)
        self.timeout = cfg.timeout
        self.pool = UdpPool(self.dest, self.url)
        self._tasks: set[asyncio.Task[bytes]] = set()

    def exchange_cb(
        self, query: bytes, state: TunnelState, done: Done, key: bytes | None = None
    ) -> Withdraw:
        """Callback form of `exchange`: ``done(answer, None)`` or ``done(None, error)``,
        exactly once; the answer carries ``query``'s ID. ``key`` is the query's
        `wire.question_key` when the caller already has it (saves reading it again).

        The returned withdraw covers the whole exchange: the UDP query and, once a TC=1
        answer started it, the TCP retry, which belongs to the same flight (issue 7)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        if key is None or len(query) < wire.HEADER_LEN:
            try:
                orig_id, key = _query_facts(query, self.url)
            except UpstreamError as exc:
                done(None, exc)
                return _nothing
        else:
            orig_id = (query[0] << 8) | query[1]
        retry = _Retry(done, self.url)

        def answered(msg: bytes | None, error: UpstreamError | None) -> None:
            if retry.withdrawn:
                return
            if msg is None:
                done(None, error)
            elif wire.is_truncated(msg):
                # RFC 7766 section 5: a truncated UDP answer is retried over TCP, same server.
                task = loop.create_task(
                    tcp_query(state, self.dest, query, key, orig_id, deadline, self.url)
                )
                retry.task = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(retry.settle)
            else:
                done(wire.with_id(msg, orig_id), None)

        retry.withdraw_udp = self.pool.send(query, key, state, deadline, answered)
        return retry.withdraw

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        withdraw = self.exchange_cb(query, state, functools.partial(settle_future, future))
        try:
            return await future
        except asyncio.CancelledError:
            withdraw()
            raise

    async def close(self) -> None:
        self.pool.close()
        for task in list(self._tasks):
            task.cancel()

    def counters(self) -> dict[str, int]:
        return {"open_sockets": self.pool.open_sockets}


class TcpUpstream:
    """``tcp://IP[:port]``: one fresh device-bound connection per query (for now)."""

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.url = cfg.url
        self.dest = (cfg.host, cfg.port)
        self.timeout = cfg.timeout

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        deadline = asyncio.get_running_loop().time() + self.timeout
        orig_id, key = _query_facts(query, self.url)
        return await tcp_query(state, self.dest, query, key, orig_id, deadline, self.url)

    async def close(self) -> None:
        """Nothing is pooled yet."""

    def counters(self) -> dict[str, int]:
        return {}
