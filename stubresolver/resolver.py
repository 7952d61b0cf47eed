"""One place decides the outcome of every query (DESIGN.md "policy / resolver", STYLE.md 6).

Order: wire checks -> local policy -> cache -> gate (tunnel state) -> upstreams. The first
four are synchronous, so the server answers them inline without scheduling a task; only a
forward is awaited. Every query ends in exactly one named `Outcome`, counted in `stats` and,
when query logging is on, logged with its name.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from stubresolver import wire
from stubresolver.cache import Cache
from stubresolver.errors import UpstreamError, WireError
from stubresolver.policy import LocalPolicy
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.base import Done, Upstream, settle_from_task

log = logging.getLogger("stubresolver.resolver")
query_log = logging.getLogger("stubresolver.queries")


class Outcome(enum.Enum):
    CACHED = "cached"
    FORWARDED = "forwarded"
    LOCAL = "local"
    REFUSED_TUNNEL_DOWN = "refused-tunnel-down"
    REFUSED_CLIENT = "refused-client"
    SERVFAIL_UPSTREAM = "servfail-upstream"
    SERVFAIL_TUNNEL_CHANGED = "servfail-tunnel-changed"
    SERVFAIL_BUSY = "servfail-busy"
    FORMERR = "formerr"
    NOTIMP = "notimp"
    BADVERS = "badvers"
    DROPPED = "dropped"

    # Members are singletons: identity hashing is correct, and Enum's default hashes the
    # name in Python code on every count (a measurable share of a cache hit).
    __hash__ = object.__hash__


_WIRE_OUTCOMES = {
    wire.FORMERR: Outcome.FORMERR,
    wire.NOTIMP: Outcome.NOTIMP,
    wire.BADVERS: Outcome.BADVERS,
}

# Parsed queries remembered by their bytes for the hit path (bounded; cleared when full;
# about 0.5 KB each).
_SEEN_MAX = 16384
# After a failure an upstream is tried only after the healthy ones, for this long (seconds).
_UNHEALTHY_FOR = 5.0
# Smoothing factor for the RTT estimate (as in RFC 6298's SRTT, alpha = 1/8).
_RTT_ALPHA = 0.125


@dataclass(slots=True)
class UpstreamHealth:
    """Per-upstream state the resolver keeps for choosing, and for `status` to read."""

    url: str
    srtt: float = 0.0  # seconds; 0 until the first answer
    healthy: bool = True
    failures: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    answers: int = 0

    def success(self, rtt: float) -> None:
        self.srtt = rtt if self.answers == 0 else self.srtt + _RTT_ALPHA * (rtt - self.srtt)
        self.answers += 1
        self.healthy = True
        self.failures = 0

    def failure(self, error: UpstreamError, now: float) -> None:
        if error.kind in ("tunnel", "epoch"):
            return  # the tunnel's state, not this server's health
        if self.healthy or self.last_error != error.message:
            log.warning("upstream %s failed: %s: %s", self.url, error.kind, error.message)
        self.healthy = False
        self.failures += 1
        self.last_error = error.message
        self.retry_at = now + _UNHEALTHY_FOR


Reply = Callable[[bytes], None]


ExchangeCb = Callable[[bytes, TunnelState, Done, bytes], object]


@dataclass(slots=True)
class _Flight:
    """One forward in flight, shared by every identical query (single-flight)."""

    epoch: int
    key: bytes
    data: bytes  # what goes upstream
    state: TunnelState
    order: list[int]  # upstreams still to try
    question: bytes  # wire.question_key of the query, for matching answers
    task: asyncio.Task[bytes] | None = None
    finished: bool = False
    waiters: list[tuple[wire.Query, bytes, Reply]] = field(default_factory=list)


@dataclass(slots=True)
class ResolverStats:
    outcomes: Counter[Outcome] = field(default_factory=Counter)


class Resolver:
    """Decides every query; owns the cache, the local policy and the upstream choice."""

    def __init__(
        self,
        *,
        upstreams: Sequence[Upstream],
        tunnel_state: Callable[[], TunnelState],
        refresh_tunnel: Callable[[], TunnelState],
        tunnel_label: str,
        cache: Cache | None,
        policy: LocalPolicy,
        flush_on_tunnel_change: bool = True,
        log_queries: bool = False,
        max_forwards: int = 1024,
        udp_max_payload: int = wire.OUR_UDP_PAYLOAD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstreams = list(upstreams)
        self.health = [UpstreamHealth(u.url) for u in self.upstreams]
        self._state = tunnel_state
        self._refresh = refresh_tunnel
        self._tunnel_label = tunnel_label
        self.cache = cache
        self.policy = policy
        self.flush_on_tunnel_change = flush_on_tunnel_change
        self.log_queries = log_queries
        self.max_forwards = max_forwards
        # Our UDP cap (server.udp_max_payload): what our OPT records advertise and what we
        # advertise upstream (wire.outgoing_query says why).
        self.udp_max_payload = udp_max_payload
        self._clock = clock
        self._flights: dict[bytes, _Flight] = {}
        # Parsed queries by their bytes after the ID; see answer_now. Only read for the
        # cache key, question spelling and UDP size, never for the ID.
        self._seen: dict[bytes, wire.Query] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.stats = ResolverStats()

    # --- the synchronous part ---------------------------------------------------------

    def answer_now(self, data: bytes) -> tuple[bytes | None, wire.Query | None]:
        """Answer without I/O when possible.

        Returns (response, query) when answered here (the caller truncates to
        ``query.udp_size`` on UDP), (None, query) when the query must be forwarded with
        `forward`, (error response, None) for a rejected packet and (None, None) to drop it.
        """
        cache = self.cache
        if cache is not None:
            # Clients repeat byte-identical queries but for the ID (glibc, browsers, dnsperf):
            # a query seen before needs no parse and no policy check to find its cached
            # answer (a cached name is never a local one). Issue 4: the hit path.
            seen = self._seen.get(data[2:])
            if seen is not None:
                hit = cache.lookup_key(
                    seen.key, (data[0] << 8) | data[1], seen.qname, self._clock()
                )
                if hit is not None:
                    self._count(Outcome.CACHED, seen)
                    return hit, seen
        try:
            query = wire.parse_query(data)
        except WireError as exc:
            outcome = (
                Outcome.DROPPED
                if exc.rcode is None
                else _WIRE_OUTCOMES.get(exc.rcode, Outcome.FORMERR)
            )
            self._count(outcome, None)
            return wire.error_response(data, exc, self.udp_max_payload), None
        local = self.policy.answer(query, data)
        if local is not None:
            self._count(Outcome.LOCAL, query)
            if query.has_edns and self.udp_max_payload != wire.OUR_UDP_PAYLOAD:
                local = wire.set_opt_payload(local, self.udp_max_payload)  # RFC 6891 6.2.3
            return local, query
        if cache is not None:
            hit = cache.lookup(query, self._clock())
            if hit is not None:
                # Remembered only once it hits, so a flood of unique names costs nothing
                # here and the hot names fit.
                seen_all = self._seen
                if len(seen_all) >= _SEEN_MAX:
                    seen_all.clear()
                seen_all[data[2:]] = query
                self._count(Outcome.CACHED, query)
                return hit, query
        state = self._state()
        if not state.up:
            return self._refused(query, data, state), query
        return None, query

    def refuse_client(self, data: bytes) -> bytes | None:
        """REFUSED for a client outside `server.allow` (RFC 8914 4.19: "Prohibited").

        Nothing of the query is looked at beyond what the answer needs: no cache, no policy,
        no log of its name. A packet that does not parse is dropped.
        """
        try:
            query = wire.parse_query(data)
        except WireError:
            return None
        self.stats.outcomes[Outcome.REFUSED_CLIENT] += 1
        return wire.build_response(query, data, wire.REFUSED, ede=(wire.EDE_PROHIBITED, ""))

    def _refused(self, query: wire.Query, data: bytes, state: TunnelState) -> bytes:
        # RFC 8914 4.24: INFO-CODE 23 "Network Error"; the text names the interface.
        self._count(Outcome.REFUSED_TUNNEL_DOWN, query)
        text = f"tunnel {state.ifname or self._tunnel_label} down"
        return wire.build_response(
            query,
            data,
            wire.REFUSED,
            ede=(wire.EDE_NETWORK_ERROR, text),
            payload=self.udp_max_payload,
        )

    # --- forwarding ------------------------------------------------------------------------

    async def forward(self, query: wire.Query, data: bytes) -> bytes:
        """Forward through the tunnel; always returns a response for the client."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def reply(response: bytes) -> None:
            if not future.done():  # the caller may have been cancelled meanwhile
                future.set_result(response)

        self.forward_cb(query, data, reply)
        return await future

    def forward_cb(self, query: wire.Query, data: bytes, reply: Reply) -> None:
        """Forward through the tunnel and call ``reply(response)`` exactly once.

        The UDP listener uses this form so a forwarded query costs no task of its own: one
        task per distinct question fetches (single-flight), and every waiting client gets
        its own ID and question case restored when it lands.
        """
        state = self._state()
        if not state.up:
            reply(self._refused(query, data, state))
            return
        key = query.key
        flight = self._flights.get(key)
        if flight is None or flight.epoch != state.epoch:
            if len(self._flights) >= self.max_forwards:
                # Bounded work: a flood of unique names cannot pile up flights and timers.
                self._count(Outcome.SERVFAIL_BUSY, query)
                text = "too many queries in flight"
                ede = (wire.EDE_OTHER, text)
                payload = self.udp_max_payload
                reply(wire.build_response(query, data, wire.SERVFAIL, ede=ede, payload=payload))
                return
            # Our UDP size; no ECS (RFC 7871 7.1.2), no client cookie (RFC 7873 5.1).
            outgoing = wire.outgoing_query(data, query, self.udp_max_payload)
            flight = _Flight(state.epoch, key, outgoing, state, self._order(), query.question_key())
            self._flights[key] = flight
            flight.waiters.append((query, data, reply))
            self._try_next(flight, None)
            return
        flight.waiters.append((query, data, reply))

    def _tunnel_changed_servfail(self, query: wire.Query, data: bytes) -> bytes:
        # The answer (if any) would come from a path that no longer exists: SERVFAIL at once,
        # never a late answer across an epoch (STYLE.md 11).
        self._count(Outcome.SERVFAIL_TUNNEL_CHANGED, query)
        state = self._state()
        text = f"tunnel {state.ifname or self._tunnel_label} {'changed' if state.up else 'down'}"
        return wire.build_response(
            query,
            data,
            wire.SERVFAIL,
            ede=(wire.EDE_NETWORK_ERROR, text),
            payload=self.udp_max_payload,
        )

    def _upstream_servfail(self, query: wire.Query, data: bytes, exc: UpstreamError) -> bytes:
        if not self._state().up:
            return self._tunnel_changed_servfail(query, data)
        self._count(Outcome.SERVFAIL_UPSTREAM, query)
        # RFC 8914 4.23: "No Reachable Authority", with the reason (e.g. a TLS failure).
        text = f"{exc.kind}: {exc.message}"[:200]
        return wire.build_response(
            query,
            data,
            wire.SERVFAIL,
            ede=(wire.EDE_NO_REACHABLE_AUTHORITY, text),
            payload=self.udp_max_payload,
        )

    def _try_next(self, flight: _Flight, last: UpstreamError | None) -> None:
        """Send the flight to the next upstream in its order, or end it with ``last``."""
        if flight.finished:
            return
        if not flight.order:
            assert last is not None
            self._land(flight, None, last)
            return
        index = flight.order.pop(0)
        upstream = self.upstreams[index]
        done = functools.partial(self._answered, flight, index, self._clock())
        exchange_cb = getattr(upstream, "exchange_cb", None)
        if exchange_cb is not None:
            # Plain UDP: no task, no future (issue 4: the forwarding hot path).
            cast(ExchangeCb, exchange_cb)(flight.data, flight.state, done, flight.question)
            return
        task = asyncio.get_running_loop().create_task(upstream.exchange(flight.data, flight.state))
        flight.task = task
        task.add_done_callback(functools.partial(settle_from_task, done, upstream.url))

    def _answered(
        self,
        flight: _Flight,
        index: int,
        started: float,
        response: bytes | None,
        error: UpstreamError | None,
    ) -> None:
        flight.task = None
        health = self.health[index]
        if response is not None:
            response, error = self._shaped(flight, response, health.url)
        if response is not None:
            health.success(self._clock() - started)
            self._land(flight, response, None)
            return
        assert error is not None
        if flight.finished:
            return  # the tunnel changed: the waiters were answered then
        if error.kind == "epoch":
            self._land(flight, None, error)  # pools closed under us (reload, shutdown)
            return
        health.failure(error, self._clock())
        # ENODEV / ENETUNREACH etc.: the tunnel may have just gone; look now instead of
        # waiting for the netlink event or the poll.
        if error.kind in ("connect", "tunnel") and not self._refresh().up:
            self._land(flight, None, error)
            return
        self._try_next(flight, error)

    def _shaped(
        self, flight: _Flight, response: bytes, url: str
    ) -> tuple[bytes | None, UpstreamError | None]:
        """The answer fit for the flight's clients (`wire.shape_answer`), or a protocol error
        for one we must not pass on: a bad answer is not cached, not patched, and the next
        upstream is tried (then SERVFAIL)."""
        # Every transport matches the question, but a QDCOUNT 0 answer would be patched into
        # garbage and cached: check again here, on raw bytes (RFC 9619: QDCOUNT 1).
        if not wire.has_question(response, flight.question):
            return None, UpstreamError("protocol", url, "answer without our question")
        try:
            return wire.shape_answer(response, flight.key, self.udp_max_payload), None
        except WireError as exc:
            return None, UpstreamError("protocol", url, f"unreadable answer: {exc}")

    def _land(self, flight: _Flight, response: bytes | None, error: UpstreamError | None) -> None:
        if flight.finished:
            return
        flight.finished = True
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        waiters, flight.waiters = flight.waiters, []
        if response is not None and self._state().epoch != flight.epoch:
            # Defence in depth: tunnel_changed normally ends flights first, but no answer may
            # ever cross an epoch (STYLE.md 11), whatever the order of callbacks.
            response, error = None, UpstreamError("epoch", "resolver", "tunnel changed")
        if response is None:
            assert error is not None
            for query, data, reply in waiters:
                if error.kind == "epoch":
                    reply(self._tunnel_changed_servfail(query, data))
                else:
                    reply(self._upstream_servfail(query, data, error))
            return
        if waiters and self.cache is not None:
            self.cache.store(waiters[0][0], response, self._clock())
        for query, _, reply in waiters:
            self._count(Outcome.FORWARDED, query)
            reply(wire.patch_response(response, query.msg_id, query.qname, (), 0))

    def _order(self) -> list[int]:
        if len(self.upstreams) == 1:
            return [0]  # the common setup: nothing to choose
        now = self._clock()
        indices = range(len(self.upstreams))
        usable = [i for i in indices if self.health[i].healthy or now >= self.health[i].retry_at]
        resting = [i for i in indices if i not in usable]
        usable.sort(key=lambda i: self.health[i].srtt)
        return usable + resting

    def tunnel_changed(self, old: TunnelState, new: TunnelState) -> None:
        """Called by the monitor on every epoch: fail in-flight work, drop cached answers."""
        flights = list(self._flights.values())
        self._flights.clear()
        for flight in flights:
            flight.finished = True
            waiters, flight.waiters = flight.waiters, []
            for query, data, reply in waiters:
                reply(self._tunnel_changed_servfail(query, data))
            if flight.task is not None:
                flight.task.cancel()
        if self.cache is not None and self.flush_on_tunnel_change:
            self.cache.flush()
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            # Pools made under the old epoch are useless or dangerous (DESIGN.md kernel table:
            # a socket bound to a deleted device fails forever).
            task = loop.create_task(upstream.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()

    def _count(self, outcome: Outcome, query: wire.Query | None) -> None:
        self.stats.outcomes[outcome] += 1
        if self.log_queries and query is not None:
            query_log.info(
                "query %s type %d -> %s", wire.decode_name(query.qname), query.qtype, outcome.value
            )
