"""What to do with one query, without I/O (STYLE.md 1, 2): answer now, forward, or drop.

Order: wire checks -> local policy -> AAAA policy -> cache -> gate (tunnel state) ->
forward. Each step takes bytes and returns a named result carrying its `Outcome`; the
tunnel state and the time are arguments, so every branch is tested in memory. The driver
(`resolver.Resolver`) counts the outcome, sends an `AnswerNow` and hands a `Forward` to the
flights.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from stubresolver import replies, wire
from stubresolver.cache import Cache
from stubresolver.errors import WireError
from stubresolver.hotqueries import HotQueries
from stubresolver.outcome import Outcome
from stubresolver.policy import LocalPolicy
from stubresolver.tunnel_state import TunnelState

_WIRE_OUTCOMES = {
    wire.FORMERR: Outcome.FORMERR,
    wire.NOTIMP: Outcome.NOTIMP,
    wire.BADVERS: Outcome.BADVERS,
}

AAAA_EDE = (17, "AAAA filtered: no IPv6 inside the tunnel (policy.aaaa)")


def aaaa_nodata_in(aaaa: str, state: TunnelState) -> bool:
    """True when policy ``aaaa`` answers AAAA NODATA under ``state``. An AAAA answer while
    the tunnel has no IPv6 address would send the client's connection out over another
    interface's IPv6 route, outside the tunnel; NODATA makes it use IPv4 (RFC 8305 happy
    eyeballs falls back at once). While the tunnel is down the gate refuses anyway."""
    if aaaa == "auto":
        return state.up and state.address_for(socket.AF_INET6) is None
    return aaaa == "never"


@dataclass(slots=True, frozen=True)
class AnswerNow:
    """Send ``response`` at once. ``query`` is the parsed query, None for a packet that did
    not parse (its error response is header and question only, always under 512 bytes); a
    UDP listener truncates to ``query.udp_size`` and its own cap."""

    response: bytes
    outcome: Outcome
    query: wire.Query | None


@dataclass(slots=True, frozen=True)
class Forward:
    """Send ``outgoing`` (the query as we ask it, `wire.outgoing_query`) through the tunnel;
    the outcome is known only when the answer lands."""

    query: wire.Query
    data: bytes  # the client's bytes, for the answer's question spelling and ID
    outgoing: bytes


@dataclass(slots=True, frozen=True)
class Drop:
    """No answer at all (a response sent to us, a packet shorter than a header)."""

    outcome: Outcome


Decision = AnswerNow | Forward | Drop


class Decider:
    """The synchronous part of the resolver: owns the cache lookups, the local policy and
    the remembered hot queries."""

    def __init__(
        self,
        *,
        cache: Cache | None,
        policy: LocalPolicy,
        tunnel_label: str,
        udp_max_payload: int = wire.OUR_UDP_PAYLOAD,
        hot: HotQueries | None = None,
        aaaa: str = "auto",
    ) -> None:
        self.cache = cache
        # policy.aaaa: "auto" answers AAAA NODATA while the tunnel carries no IPv6 address.
        self.aaaa = aaaa
        self._aaaa_state: TunnelState | None = None
        self._aaaa_nodata = aaaa == "never"
        self.policy = policy
        self.tunnel_label = tunnel_label
        # Our UDP cap (server.udp_max_payload): what our OPT records advertise and what we
        # advertise upstream (wire.outgoing_query says why).
        self.udp_max_payload = udp_max_payload
        self.hot = hot if hot is not None else HotQueries()

    def aaaa_nodata(self, state: TunnelState) -> bool:
        """`aaaa_nodata_in` for this policy, worked out once per tunnel state."""
        if self.aaaa != "auto":
            return self._aaaa_nodata
        if state is not self._aaaa_state:  # TunnelState is immutable: one check per state
            self._aaaa_state = state
            self._aaaa_nodata = aaaa_nodata_in(self.aaaa, state)
        return self._aaaa_nodata

    def decide(self, data: bytes, state: TunnelState, now: float) -> Decision:
        cache = self.cache
        if cache is not None:
            seen = self.hot.get(data[2:])
            if seen is not None and not (seen.qtype == wire.TYPE_AAAA and self.aaaa_nodata(state)):
                hit = cache.lookup_key(seen.key, (data[0] << 8) | data[1], seen.qname, now)
                if hit is not None:
                    return AnswerNow(hit, Outcome.CACHED, seen)
        try:
            query = wire.parse_query(data)
        except WireError as exc:
            response = wire.error_response(data, exc, self.udp_max_payload)
            if response is None:
                return Drop(Outcome.DROPPED)
            outcome = _WIRE_OUTCOMES.get(exc.rcode or wire.FORMERR, Outcome.FORMERR)
            return AnswerNow(response, outcome, None)
        local = self.policy.answer(query, data)
        if local is not None:
            if query.has_edns and self.udp_max_payload != wire.OUR_UDP_PAYLOAD:
                local = wire.set_opt_payload(local, self.udp_max_payload)  # RFC 6891 6.2.3
            return AnswerNow(local, Outcome.LOCAL, query)
        if query.qtype == wire.TYPE_AAAA and self.aaaa_nodata(state):
            # RFC 8914 4.18: EDE 17 "Filtered" says why, to a client that speaks EDNS.
            nodata = wire.build_response(
                query, data, wire.NOERROR, ede=AAAA_EDE, payload=self.udp_max_payload
            )
            return AnswerNow(nodata, Outcome.LOCAL, query)
        if cache is not None:
            hit = cache.lookup(query, now)
            if hit is not None:
                self.hot.remember(data[2:], query)
                return AnswerNow(hit, Outcome.CACHED, query)
        if not state.up:
            ifname = state.ifname or self.tunnel_label
            response = replies.refused_tunnel_down(query, data, ifname, self.udp_max_payload)
            return AnswerNow(response, Outcome.REFUSED_TUNNEL_DOWN, query)
        # Our UDP size; no ECS (RFC 7871 7.1.2), no client cookie (RFC 7873 5.1).
        outgoing = wire.outgoing_query(data, query, self.udp_max_payload)
        if len(outgoing) > self.udp_max_payload:
            # It would not fit one datagram inside the tunnel (EMSGSIZE, or fragments that
            # get lost): the client's fault alone, answered before it can touch a flight
            # or an upstream's health (issue 7).
            response = replies.formerr_too_large(query, data, self.udp_max_payload)
            return AnswerNow(response, Outcome.FORMERR, query)
        return Forward(query, data, outgoing)

    def refuse_client(self, data: bytes) -> AnswerNow | Drop:
        """REFUSED for a client outside `server.allow`. Nothing of the query is looked at
        beyond what the answer needs: no cache, no policy, no log of its name. A packet
        that does not parse is dropped."""
        try:
            query = wire.parse_query(data)
        except WireError:
            return Drop(Outcome.DROPPED)
        response = replies.refused_client(query, data, self.udp_max_payload)
        return AnswerNow(response, Outcome.REFUSED_CLIENT, None)
