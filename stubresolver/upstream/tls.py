"""``tls://IP[:port]#auth-name``: DNS-over-TLS (RFC 7858) in the strict profile (RFC 8310).

One persistent connection per upstream, reused across queries (RFC 7858 3.4). Queries are
pipelined: each gets a fresh random ID on the wire, and answers, which may come in any order
(RFC 7766 6.2.1.1), are matched by ID and question. Every query is padded to a multiple of
128 octets (RFC 8467 4.1). Connection handling (epochs, backoff, idle timeout, resumption,
pins) lives in ``pool.PooledTlsUpstream``; this module is the DNS-over-TCP framing and the
callback path: a query for a connection that is up and has answered is written at once and
answered from the reader, with no task and no future of its own (issue 11).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from typing import TYPE_CHECKING

from stubresolver import netbind, wire
from stubresolver.errors import UpstreamError
from stubresolver.randomness import random_id
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.counters import TransportCounters
from stubresolver.upstream.framing import answers_question, finish_answer, read_query
from stubresolver.upstream.pool import PooledConnection, PooledTlsUpstream, timeout_error
from stubresolver.upstream.tlsstream import TlsStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from stubresolver.upstream.base import Done, Withdraw


def _nothing() -> None:
    """Withdraw of a query that was already answered."""


class _Retry:
    """The one retry of a callback-path query whose reused connection died, as a task on
    the task path; ``withdraw`` ends whichever is running."""

    __slots__ = ("done", "label", "task", "withdraw_first")

    def __init__(self, done: Done, label: str) -> None:
        self.done: Done | None = done
        self.label = label
        self.task: asyncio.Task[bytes] | None = None
        self.withdraw_first: Withdraw = _nothing

    def start(self, up: TlsUpstream, query: bytes, state: TunnelState, deadline: float) -> None:
        self.task = asyncio.get_running_loop().create_task(up._exchange(query, state, deadline))
        self.task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[bytes]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.finish(task.result(), None)
        elif isinstance(error, UpstreamError):
            self.finish(None, error)
        else:
            # A bug must not leave the query unanswered; the task path logs nothing itself.
            self.finish(None, UpstreamError("protocol", self.label, f"{error!r}"))

    def finish(self, answer: bytes | None, error: UpstreamError | None) -> None:
        done, self.done = self.done, None
        if done is not None:
            done(answer, error)

    def withdraw(self) -> None:
        self.done = None
        self.withdraw_first()
        if self.task is not None and not self.task.done():
            self.task.cancel()


log = logging.getLogger(__name__)

_MAX_IN_FLIGHT = 0xF000  # leave ID space free so a random pick finds a free ID quickly
# How often the callback path looks for queries past their deadline (seconds): one timer per
# connection instead of one per query, as in the UDP pool.
SWEEP_INTERVAL = 0.05


class _Pending:
    """A query sent on the callback path: who gets the answer, and by when."""

    __slots__ = ("added", "deadline", "done", "orig_id", "sent_at", "timeout")

    def __init__(
        self, done: Done, deadline: float, timeout: float, orig_id: int, added: bool,
        sent_at: float,
    ) -> None:  # fmt: skip
        self.done = done
        self.deadline = deadline
        self.timeout = timeout
        self.orig_id = orig_id
        self.added = added
        self.sent_at = sent_at


class DotConnection(PooledConnection):
    """One DNS-over-TLS connection: length-prefixed messages, pipelined, matched by ID."""

    def __init__(
        self, stream: TlsStream, epoch: int, label: str, idle_timeout: float,
        counters: TransportCounters, on_close: Callable[[PooledConnection], None],
    ) -> None:  # fmt: skip
        self._deframer = wire.TcpDeframer()
        self._keys: dict[int, bytes] = {}
        #: Queries of the callback path (`request_cb`), by wire ID; their keys are in _keys.
        self._pending: dict[int, _Pending] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        super().__init__(stream, epoch, label, idle_timeout, counters, on_close)

    def _received(self, data: bytes) -> None:
        for msg in self._deframer.feed(data):
            if len(msg) < wire.HEADER_LEN:
                continue
            wire_id = wire.get_id(msg)
            key = self._keys.get(wire_id)
            if key is None or not answers_question(msg, key):
                # Late answer to a query that timed out, or a mismatch: ignore it.
                log.debug("%s: ignoring unexpected message id %d", self.label, wire_id)
                continue
            pending = self._pending.pop(wire_id, None)
            if pending is None:
                self._resolve(wire_id, msg)
                continue
            del self._keys[wire_id]
            pending.done(finish_answer(msg, pending.orig_id, pending.added), None)
        if not self._busy():
            self._arm_idle()

    # --- the callback path: no task and no future per query (issue 11) ------------------

    def request_cb(self, query: bytes, deadline: float, timeout: float, done: Done) -> Withdraw:
        """Send ``query`` now; ``done`` gets the answer or an UpstreamError exactly once,
        unless the returned function withdraws it first. The same framing, IDs, padding
        and matching as `request`; deadlines are kept by one sweep per connection."""
        if self.error is not None:
            done(None, self._error_copy())
            return _nothing
        try:
            orig_id, key, padded, added = read_query(query, self.label)
        except UpstreamError as exc:
            done(None, exc)
            return _nothing
        if len(self._keys) >= _MAX_IN_FLIGHT:
            done(None, UpstreamError("protocol", self.label, "too many queries in flight"))
            return _nothing
        wire_id = random_id()
        while wire_id in self._keys:
            wire_id = random_id()
        try:
            self.stream.write_nowait(
                wire.tcp_frame(wire.with_id(padded, wire_id)), self._send_failed
            )
        except (OSError, ssl.SSLError) as exc:
            reason = netbind.errno_name(exc) if isinstance(exc, OSError) else exc.reason
            self.fail(UpstreamError("connect", self.label, f"send failed: {reason}"))
            done(None, self._error_copy())
            return _nothing
        self._keys[wire_id] = key
        pending = _Pending(done, deadline, timeout, orig_id, added, self._loop.time())
        self._pending[wire_id] = pending
        self._disarm_idle()
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
        return functools.partial(self._withdraw, wire_id, pending)

    def _withdraw(self, wire_id: int, pending: _Pending) -> None:
        if self._pending.get(wire_id) is pending:
            del self._pending[wire_id]
            del self._keys[wire_id]
            self._arm_idle()

    def _send_failed(self, exc: BaseException) -> None:
        reason = netbind.errno_name(exc) if isinstance(exc, OSError) else str(exc)
        self.fail(UpstreamError("connect", self.label, f"send failed: {reason}"))

    def _sweep(self) -> None:
        """Fail every callback query past its deadline. A timeout with nothing at all
        received since it was sent means the path is dead (a blackholed tunnel): the
        connection is closed, as `_send_and_wait` does, so nothing queues behind it."""
        self._sweeper = None
        now = self._loop.time()
        expired = [(i, p) for i, p in self._pending.items() if p.deadline <= now]
        for wire_id, pending in expired:
            del self._pending[wire_id]
            del self._keys[wire_id]
            pending.done(None, timeout_error(self.label, pending.timeout))
        if any(self.last_rx < p.sent_at for _, p in expired):
            self.fail(UpstreamError("connect", self.label, "server silent; connection dropped"))
            return
        if self._pending:
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
        else:
            self._arm_idle()

    def _busy(self) -> bool:
        return bool(self._waiters or self._pending)

    def _failed(self, error: UpstreamError) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        pending, self._pending = self._pending, {}
        for wire_id, entry in pending.items():
            self._keys.pop(wire_id, None)
            entry.done(None, UpstreamError(error.kind, error.upstream, error.message))

    async def request(self, query: bytes, deadline: float, timeout: float) -> bytes:
        if self.error is not None:
            raise self._error_copy()
        orig_id, key, padded, added = read_query(query, self.label)
        if len(self._keys) >= _MAX_IN_FLIGHT:
            raise UpstreamError("protocol", self.label, "too many queries in flight")
        wire_id = random_id()
        while wire_id in self._keys:
            wire_id = random_id()
        frame = wire.tcp_frame(wire.with_id(padded, wire_id))
        fut = self._add_waiter(wire_id)
        self._keys[wire_id] = key
        try:
            answer = await self._send_and_wait(
                lambda: self.stream.write(frame), fut, deadline, timeout
            )
        finally:
            del self._keys[wire_id]
            self._remove_waiter(wire_id, fut)
        return finish_answer(answer, orig_id, added)


class TlsUpstream(PooledTlsUpstream):
    """``tls://IP[:port]#auth-name`` (see the module doc)."""

    def try_exchange_cb(self, query: bytes, state: TunnelState, done: Done) -> Withdraw | None:
        """The callback path for a query that can go out at once: on the pooled connection,
        made in this epoch, already answering (its session saved). None: take the task
        path, which connects, backs off and resumes. A reused connection that dies under
        the query sends it once more down the task path, on a fresh connection, as
        `_exchange` retries it."""
        conn = self._conn
        if (
            not isinstance(conn, DotConnection)
            or not state.up
            or conn.epoch != state.epoch
            or not conn.usable()
            or not conn.session_saved
        ):
            return None
        self.transport.reused += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        retry = _Retry(done, self.url)

        def answered(answer: bytes | None, error: UpstreamError | None) -> None:
            if error is not None and error.kind == "connect" and deadline > loop.time():
                log.debug("%s: reused connection lost (%s); retrying", self.url, error.message)
                self.transport.retries += 1
                retry.start(self, query, state, deadline)
                return
            retry.finish(answer, error)

        retry.withdraw_first = conn.request_cb(query, deadline, self.timeout, answered)
        return retry.withdraw

    async def _start(self, stream: TlsStream, state: TunnelState, deadline: float) -> DotConnection:
        return DotConnection(
            stream,
            state.epoch,
            self.url,
            self.idle_timeout,
            self.transport,
            self._connection_closed,
        )
