"""``tls://IP[:port]#auth-name``: DNS-over-TLS (RFC 7858) in the strict profile (RFC 8310).

One persistent connection per upstream, reused across queries (RFC 7858 3.4). Queries are
pipelined: each gets a fresh random ID on the wire, and answers, which may come in any order
(RFC 7766 6.2.1.1), are matched by ID and question. Every query is padded to a multiple of
128 octets (RFC 8467 4.1). Connection handling (epochs, backoff, idle timeout, resumption,
pins) lives in ``pool.PooledTlsUpstream``; this module is only the DNS-over-TCP framing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stubresolver import wire
from stubresolver.errors import UpstreamError
from stubresolver.randomness import random_id
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.counters import TransportCounters
from stubresolver.upstream.framing import answers_question, finish_answer, read_query
from stubresolver.upstream.pool import PooledConnection, PooledTlsUpstream
from stubresolver.upstream.tlsstream import TlsStream

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

_MAX_IN_FLIGHT = 0xF000  # leave ID space free so a random pick finds a free ID quickly


class DotConnection(PooledConnection):
    """One DNS-over-TLS connection: length-prefixed messages, pipelined, matched by ID."""

    def __init__(
        self, stream: TlsStream, epoch: int, label: str, idle_timeout: float,
        counters: TransportCounters, on_close: Callable[[PooledConnection], None],
    ) -> None:  # fmt: skip
        self._deframer = wire.TcpDeframer()
        self._keys: dict[int, bytes] = {}
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
            self._resolve(wire_id, msg)

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

    async def _start(self, stream: TlsStream, state: TunnelState, deadline: float) -> DotConnection:
        return DotConnection(
            stream,
            state.epoch,
            self.url,
            self.idle_timeout,
            self.transport,
            self._connection_closed,
        )
