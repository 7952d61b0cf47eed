"""The thin driver that gives every query its one named `Outcome` (STYLE.md 6).

`decide` (pure) says what to do with a query; `flights` shares one forward among identical
queries and keeps epochs apart; `selection` chooses the upstream and keeps its health. This
module joins them: it counts each outcome (and logs it with the name when query logging is
on), starts exchanges, lands answers, and ends everything in flight when the tunnel changes
or a reload replaces the configuration.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stubresolver import replies, wire
from stubresolver.answercheck import checked_answer
from stubresolver.cache import Cache
from stubresolver.decide import AnswerNow, Decider, Decision, Drop, Forward
from stubresolver.errors import UpstreamError
from stubresolver.flights import Flight, Flights, Reply
from stubresolver.hotqueries import HotQueries
from stubresolver.outcome import Outcome
from stubresolver.policy import LocalPolicy
from stubresolver.routes import Router
from stubresolver.selection import Selection, UpstreamHealth
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.base import Upstream, settle_future

__all__ = ["AnswerNow", "Decision", "Drop", "Forward", "Outcome", "Resolver", "UpstreamHealth"]

query_log = logging.getLogger("stubresolver.queries")

# A failed send may mean the tunnel just went (ENODEV, ENETUNREACH): the monitor is asked to
# look again, but at most this often (seconds), not once per failed query (issue 7).
REPROBE_INTERVAL = 0.25


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
        hot: HotQueries | None = None,
        router: Router | None = None,
        aaaa: str = "auto",
    ) -> None:
        self.upstreams = list(upstreams)
        # Split DNS (routes.py): which of the upstreams may answer a name; None: all of them.
        self.router = router
        self.selection = Selection([u.url for u in self.upstreams])
        self._state = tunnel_state
        self._refresh = refresh_tunnel
        self._last_reprobe = -REPROBE_INTERVAL
        self._tunnel_label = tunnel_label
        self.decider = Decider(
            cache=cache,
            policy=policy,
            tunnel_label=tunnel_label,
            udp_max_payload=udp_max_payload,
            hot=hot,
            aaaa=aaaa,
        )
        self.cache = cache
        self.flush_on_tunnel_change = flush_on_tunnel_change
        self.log_queries = log_queries
        self.udp_max_payload = udp_max_payload
        self.flights = Flights(max_forwards)
        self._clock = clock
        self._retired = False
        self._background: set[asyncio.Task[None]] = set()
        self.stats = ResolverStats()

    def now(self) -> float:
        """The resolver's clock (the one its cache and health ledger run on)."""
        return self._clock()

    @property
    def health(self) -> list[UpstreamHealth]:
        """Each upstream's health, in `upstreams` order (the one ledger: `selection`)."""
        return self.selection.health

    # --- the synchronous part ---------------------------------------------------------

    def answer_now(self, data: bytes) -> Decision:
        """What to do with ``data``, without I/O: `AnswerNow` (send it; on UDP truncate to
        the query's size), `Forward` (hand it to `forward_cb`) or `Drop`."""
        decision = self.decider.decide(data, self._state(), self._clock())
        if type(decision) is AnswerNow:
            self._count(decision.outcome, decision.query)
        elif type(decision) is Drop:
            self._count(decision.outcome, None)
        return decision

    def refuse_client(self, data: bytes) -> AnswerNow | Drop:
        """REFUSED (or a drop) for a client outside `server.allow`."""
        decision = self.decider.refuse_client(data)
        self.stats.outcomes[decision.outcome] += 1  # never logged with its name
        return decision

    # --- forwarding ------------------------------------------------------------------------

    async def forward(self, decision: Forward) -> bytes:
        """`forward_cb` for awaiting callers (tests, tools)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.forward_cb(decision, lambda response: settle_future(future, response, None))
        return await future

    def forward_cb(self, decision: Forward, reply: Reply) -> None:
        """Forward through the tunnel and call ``reply(response)`` exactly once.

        One exchange per distinct question is in flight (single-flight); every waiting
        client gets its own ID and question case restored when it lands.
        """
        query, data = decision.query, decision.data
        state = self._state()
        if not state.up:
            # The gate again: an awaiting caller may forward after the tunnel went.
            self._count(Outcome.REFUSED_TUNNEL_DOWN, query)
            ifname = state.ifname or self._tunnel_label
            reply(replies.refused_tunnel_down(query, data, ifname, self.udp_max_payload))
            return
        if self._retired:
            reply(self._tunnel_changed_servfail(query, data))
            return
        flights = self.flights
        flight = flights.current(query.key, state.epoch)
        if flight is None:
            if flights.full():
                self._busy(query, data, reply, "too many queries in flight")
                return
            router = self.router
            candidates = router.candidates(query.qname_lower) if router is not None else None
            order = self.selection.order(self._clock(), candidates)
            flight = flights.start(query.key, decision.outgoing, state, order, query.question_key())
            refused = flights.join(flight, query, data, reply)
            if refused is not None:
                flights.finish(flight)
                self._busy(query, data, reply, refused)
                return
            self._try_next(flight, None)
            return
        refused = flights.join(flight, query, data, reply)
        if refused is not None:
            self._busy(query, data, reply, refused)

    def _busy(self, query: wire.Query, data: bytes, reply: Reply, text: str) -> None:
        self._count(Outcome.SERVFAIL_BUSY, query)
        reply(replies.servfail_busy(query, data, text, self.udp_max_payload))

    def _try_next(self, flight: Flight, last: UpstreamError | None) -> None:
        """Send the flight to the next upstream in its order, or end it with ``last``."""
        if flight.finished:
            return
        if not flight.order:
            assert last is not None
            self._land(flight, None, last)
            return
        index = flight.order.pop(0)
        done = functools.partial(self._answered, flight, index, self._clock())
        flight.withdraw = self.upstreams[index].exchange_cb(
            flight.data, flight.state, done, flight.question
        )

    def _answered(
        self,
        flight: Flight,
        index: int,
        started: float,
        response: bytes | None,
        error: UpstreamError | None,
    ) -> None:
        if flight.finished:
            return  # the tunnel changed or a reload came: the waiters were answered then
        if response is not None:
            url, payload = self.upstreams[index].url, self.udp_max_payload
            try:
                answer = checked_answer(response, flight.question, flight.key, payload, url)
            except UpstreamError as exc:
                error = exc
            else:
                self.selection.success(index, self._clock() - started)
                self._land(flight, answer, None)
                return
        assert error is not None
        if error.kind == "epoch":
            self._land(flight, None, error)  # pools closed under us (reload, shutdown)
            return
        self.selection.failure(index, error, self._clock())
        # ENODEV / ENETUNREACH etc.: the tunnel may have just gone; look now instead of
        # waiting for the netlink event or the poll.
        if error.kind in ("connect", "tunnel") and not self._reprobe().up:
            self._land(flight, None, error)
            return
        self._try_next(flight, error)

    def _reprobe(self) -> TunnelState:
        """The tunnel state after a send error: looked up afresh at most once per
        `REPROBE_INTERVAL`, so a burst of failures costs one probe, not one each."""
        now = self._clock()
        if now - self._last_reprobe < REPROBE_INTERVAL:
            return self._state()
        self._last_reprobe = now
        return self._refresh()

    def _land(self, flight: Flight, response: bytes | None, error: UpstreamError | None) -> None:
        waiters = self.flights.finish(flight)
        if not waiters:
            return
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
        if self.cache is not None:
            self.cache.store(waiters[0][0], response, self._clock())
        for query, _, reply in waiters:
            self._count(Outcome.FORWARDED, query)
            reply(wire.patch_response(response, query.msg_id, query.qname, (), 0))

    def _tunnel_changed_servfail(self, query: wire.Query, data: bytes) -> bytes:
        # The answer (if any) would come from a path that no longer exists: SERVFAIL at once,
        # never a late answer across an epoch (STYLE.md 11).
        self._count(Outcome.SERVFAIL_TUNNEL_CHANGED, query)
        if self._retired:
            return replies.servfail_reloaded(query, data, self.udp_max_payload)
        state = self._state()
        ifname = state.ifname or self._tunnel_label
        return replies.servfail_tunnel_changed(query, data, ifname, state.up, self.udp_max_payload)

    def _upstream_servfail(self, query: wire.Query, data: bytes, error: UpstreamError) -> bytes:
        if not self._state().up:
            return self._tunnel_changed_servfail(query, data)
        self._count(Outcome.SERVFAIL_UPSTREAM, query)
        return replies.servfail_upstream(query, data, error, self.udp_max_payload)

    # --- epochs and shutdown -------------------------------------------------------------

    def _end_all_flights(self) -> None:
        for flight in self.flights.finish_all():
            waiters, flight.waiters = flight.waiters, []
            # First stop the exchange (UDP query, TCP retry, TLS task): it sends nothing more.
            flight.withdraw()
            for query, data, reply in waiters:
                reply(self._tunnel_changed_servfail(query, data))

    def _close_upstreams(self) -> None:
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            # Pools made under the old epoch are useless or dangerous (DESIGN.md kernel table:
            # a socket bound to a deleted device fails forever).
            task = loop.create_task(upstream.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def tunnel_changed(self, old: TunnelState, new: TunnelState) -> None:
        """Called by the monitor on every epoch: fail in-flight work, drop cached answers."""
        self._end_all_flights()
        if self.cache is not None and self.flush_on_tunnel_change:
            self.cache.flush()
        self.decider.hot.clear()
        self._close_upstreams()

    def announcement_changed(self) -> None:
        """The VPN announced other servers or domains (or withdrew them): answers and
        flights of the old ones must not serve the new routing; their pools close."""
        self._end_all_flights()
        if self.cache is not None:
            self.cache.flush()
        self.decider.hot.clear()
        self._close_upstreams()

    def retire(self) -> None:
        """A reload replaced this resolver: every flight ends now with SERVFAIL, its exchange
        withdrawn, and nothing more is sent under this configuration (issue 7). The pools
        close in the background; the returned-to caller may rely on no further send."""
        self._retired = True
        self._end_all_flights()
        self._close_upstreams()

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()

    def _count(self, outcome: Outcome, query: wire.Query | None) -> None:
        self.stats.outcomes[outcome] += 1
        if self.log_queries and query is not None:
            query_log.info(
                "query %s type %d -> %s", wire.decode_name(query.qname), query.qtype, outcome.value
            )
