"""The one small upstream interface (STYLE.md 3, 14; dnsproxy ``upstream/upstream.go``).

Two forms exist, and both are declared here:

- `Exchanger`, the awaitable form a transport writes naturally (DoT, DoH, TCP);
- `Upstream`, the callback form the resolver drives: ``exchange_cb(...)`` calls ``done``
  exactly once and returns a `Withdraw`. Plain UDP implements it directly, so a forwarded
  query costs no task and no future (issue 4); `Awaited` is the one adapter that gives an
  `Exchanger` the callback form, and `factory.make_upstream` applies it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from stubresolver.errors import UpstreamError
from stubresolver.tunnel_state import TunnelState

log = logging.getLogger(__name__)

# Completion callback of a callback-based exchange: (answer, None) or (None, error), once.
Done = Callable[[bytes | None, UpstreamError | None], None]
# Withdraws a query sent with a callback (its flight ended): after it returns the exchange
# sends nothing more and ``done`` is not called.
Withdraw = Callable[[], None]


class Exchanger(Protocol):
    """A DNS server reached through the tunnel, in the awaitable form.

    `exchange` takes the client's raw query (any ID) and returns the raw response carrying
    the SAME ID. On the wire the upstream uses its own random ID where that matters (UDP)
    and accepts a response only when source, ID and question (`wire.question_key`) match,
    ignoring mismatches until the deadline (anti-spoofing, RFC 5452). It raises
    `stubresolver.errors.UpstreamError` only, and honours cancellation by closing whatever
    it opened before re-raising. Sockets come only from `stubresolver.netbind`.
    """

    url: str

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        """Send ``query`` through the tunnel described by ``state``; return the response."""
        ...

    async def close(self) -> None:
        """Close every pooled socket; the upstream may be used again afterwards."""
        ...

    def counters(self) -> dict[str, int]:
        """Transport counters for `status` (connections, handshakes, ...); may be empty.
        Health and RTT are not here: the resolver's `selection` keeps them."""
        ...


class Upstream(Protocol):
    """The form the resolver drives: what `Exchanger` promises, through a callback."""

    url: str

    def exchange_cb(self, query: bytes, state: TunnelState, done: Done, key: bytes) -> Withdraw:
        """Send ``query``; call ``done(answer, None)`` or ``done(None, error)`` exactly once,
        unless the returned function is called first. ``key`` is the query's
        `wire.question_key` (the caller has it already)."""
        ...

    async def close(self) -> None: ...

    def counters(self) -> dict[str, int]: ...


def settle_from_task(done: Done, label: str, task: asyncio.Task[bytes]) -> None:
    """Hand an exchange task's outcome to a `Done` callback. Foreign exceptions become
    ``protocol`` errors."""
    if task.cancelled():
        done(None, UpstreamError("epoch", label, "cancelled"))
        return
    error = task.exception()
    if error is None:
        done(task.result(), None)
    elif isinstance(error, UpstreamError):
        done(None, error)
    else:
        log.error("upstream %s failed unexpectedly: %r", label, error)
        done(None, UpstreamError("protocol", label, f"internal error: {error!r}"))


def settle_future(
    future: asyncio.Future[bytes], msg: bytes | None, error: UpstreamError | None
) -> None:
    """A `Done` for awaiting callers: completes ``future`` once (the other direction)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert msg is not None
        future.set_result(msg)


class _TaskExchange:
    """One exchange of an `Exchanger` run as a task, with its withdraw."""

    __slots__ = ("done", "task")

    def __init__(self, done: Done) -> None:
        self.done: Done | None = done
        self.task: asyncio.Task[bytes] | None = None

    def settle(self, label: str, task: asyncio.Task[bytes]) -> None:
        done, self.done = self.done, None
        if done is not None:
            settle_from_task(done, label, task)

    def withdraw(self) -> None:
        self.done = None
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the transport closes what it opened (Exchanger's promise)


#: A transport's own callback path for the queries it can send at once (DoT on a connection
#: that is up); None: this query takes the task path.
FastPath = Callable[[bytes, TunnelState, Done], Withdraw | None]


class Awaited:
    """The callback form of an `Exchanger`: one task per exchange, cancelled on withdraw;
    ``fast`` first, where the transport has one."""

    def __init__(self, inner: Exchanger, fast: FastPath | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self._fast = fast

    def exchange_cb(self, query: bytes, state: TunnelState, done: Done, key: bytes) -> Withdraw:
        if self._fast is not None:
            withdraw = self._fast(query, state, done)
            if withdraw is not None:
                return withdraw
        exchange = _TaskExchange(done)
        task = asyncio.get_running_loop().create_task(self.inner.exchange(query, state))
        exchange.task = task
        task.add_done_callback(lambda t: exchange.settle(self.url, t))
        return exchange.withdraw

    async def close(self) -> None:
        await self.inner.close()

    def counters(self) -> dict[str, int]:
        return self.inner.counters()
