"""The one small upstream interface (STYLE.md 3; dnsproxy ``upstream/upstream.go``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from stubresolver.errors import UpstreamError
from stubresolver.tunnel_state import TunnelState

log = logging.getLogger(__name__)

# Completion callback of a callback-based exchange: (answer, None) or (None, error), once.
Done = Callable[[bytes | None, UpstreamError | None], None]


class Upstream(Protocol):
    """A DNS server reached through the tunnel.

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


@runtime_checkable
class CountsTransport(Protocol):
    """An upstream that keeps transport counters (DoT, DoH: connections, TLS sessions).

    Declared here so ``status`` can ask for them without importing the TLS code.
    """

    def counters(self) -> dict[str, int]:
        """Counter name -> value (see ``upstream.counters.TransportCounters``)."""
        ...


def settle_from_task(done: Done, label: str, task: asyncio.Task[bytes]) -> None:
    """Hand an exchange task's outcome to a `Done` callback: the one adapter from the
    awaitable form to the callback form. Foreign exceptions become ``protocol`` errors."""
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
