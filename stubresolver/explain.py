"""`stubresolver explain NAME [TYPE]`: what would happen to that query now, and why.

It walks the decision the hot path makes (decide.py) in the same order, through the same
functions, on the daemon's live state: the local rules (`LocalPolicy.classify`), the AAAA
policy (`decide.aaaa_nodata_in`), the cache (`Cache.peek`), the gate (tunnel state), and
for a query that would be forwarded the route (`Router.choose`), the order the health
ledger would try the upstreams in (`Selection.order`) and, for ``vpn``, the announced
servers (`VpnUpstream.servers_now`). Each of those is a pure read: explaining a query
counts no hit or miss, remembers no hot query, counts no outcome and sends nothing.

dnspython builds the probe query and reads the answers it shows (DESIGN.md, "Libraries");
the result is a plain dict, the control socket's response.
"""

from __future__ import annotations

from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from stubresolver import replies, wire
from stubresolver.decide import AAAA_EDE, aaaa_nodata_in
from stubresolver.errors import UpstreamError, WireError
from stubresolver.policy import Match, Rule
from stubresolver.resolver import Resolver
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.vpn import VpnUpstream

Result = dict[str, Any]

#: Why each local rule keeps a name at home (the reason `explain` gives).
RULE_REASONS = {
    Rule.RECORDS: "a configured record (local.records) answers it",
    Rule.BOOTSTRAP: "a bootstrap_hosts entry answers it",
    Rule.SINGLE_LABEL: "a single-label name names the local network (local.single_label: nxdomain)",
    Rule.BLOCK_LIST: "on policy.block_list (a public DoH provider), NXDOMAIN below it too",
    Rule.LOCALHOST: "localhost is loopback (RFC 6761 6.3)",
    Rule.CANARY: "a canary name: NXDOMAIN turns off a browser's or OS's own resolver path",
    Rule.SPECIAL_USE: "a special-use name that must never be asked upstream",
    Rule.DDR: "resolver.arpa (RFC 9462): DDR would point clients past the stub",
    Rule.PRIVATE_REVERSE: "a reverse lookup in a private range would tell the VPN's "
    "resolver about the LAN (RFC 6303)",
}

_SPECIAL_USE = {
    "invalid.": "RFC 6761 6.4",
    "local.": "RFC 6762: multicast DNS, never unicast",
    "home.arpa.": "RFC 8375: home networks",
    "internal.": "ICANN's private-use TLD",
    "onion.": "RFC 7686: Tor names",
}

# The query forms a cache entry is kept apart by (wire.KEY_*), in the order shown.
_KEY_BITS = (
    (wire.KEY_RD, "RD"),
    (wire.KEY_EDNS, "EDNS"),
    (wire.KEY_DO, "DO"),
    (wire.KEY_CD, "CD"),
    (wire.KEY_AD, "AD"),
)


def probe(name: str, rdtype: str) -> bytes:
    """The query `explain` walks through: RD, EDNS without DO, as a typical client asks.
    ValueError for a type dnspython does not know; dns.exception.SyntaxError (and its
    kin) for a name that is not one."""
    try:
        qtype = dns.rdatatype.from_text(rdtype)
    except dns.rdatatype.UnknownRdatatype:
        raise ValueError(f"type {rdtype[:32]!r} is not a DNS type") from None
    qname = dns.name.from_text(name)
    return dns.message.make_query(qname, qtype, use_edns=0, payload=wire.OUR_UDP_PAYLOAD).to_wire()


def explain(resolver: Resolver, name: str, rdtype: str, state: TunnelState, now: float) -> Result:
    """What ``resolver`` would do now with a query for ``name`` ``rdtype`` under ``state``.
    ValueError for an unknown type; a name that is not a DNS name is the answer
    ``refused-malformed-name``."""
    try:
        data = probe(name, rdtype)
    except (dns.exception.DNSException, UnicodeError) as exc:  # dnspython's name errors
        return {
            "ok": True,
            "name": name,
            "type": rdtype.upper(),
            "outcome": "refused-malformed-name",
            "reason": f"not a DNS name: {exc}",
            "rcode": "REFUSED",
        }
    try:
        query = wire.parse_query(data)
    except WireError as exc:  # dnspython built it, so this would be our bug; say so
        return {**_head(name, rdtype), "outcome": "formerr", "reason": str(exc)}
    head = _head(
        wire.decode_name(query.qname),
        dns.rdatatype.to_text(dns.rdatatype.RdataType.make(query.qtype)),
    )
    head["tunnel"] = _tunnel(state)
    decider = resolver.decider
    match = decider.policy.classify(query)
    if match is not None:
        response = decider.policy.build(match, query, data)
        return {**head, "outcome": "local", **_local(match), **_answer(response)}
    if query.qtype == wire.TYPE_AAAA and aaaa_nodata_in(decider.aaaa, state):
        why = "never" if decider.aaaa == "never" else "auto, and the tunnel has no IPv6 address"
        return {
            **head,
            "outcome": "aaaa-nodata",
            "rule": "policy.aaaa",
            "reason": f"policy.aaaa is {why}: an AAAA answer would lead the client "
            "outside the tunnel",
            "rcode": "NOERROR",
            "answers": [],
            "ede": {"code": AAAA_EDE[0], "text": AAAA_EDE[1]},
        }
    # The cache comes before the gate (decide.py): with cache.flush_on_tunnel_change off,
    # a cached answer is served while the tunnel is down.
    cached = _cached(resolver, query, now)
    miss = _miss(resolver, query, data, state, now)
    if cached:
        best = cached[0]
        return {
            **head,
            "outcome": "cached",
            "reason": f"an answer from the cache, {best['ttl_left']} s left "
            f"(queries with {best['flags']})",
            "cache": cached,
            "miss": miss,  # what a query in another form would get
        }
    return {**head, **miss}


def _miss(
    resolver: Resolver, query: wire.Query, data: bytes, state: TunnelState, now: float
) -> Result:
    """What a query the cache cannot answer gets: the gate, then the forward."""
    if not state.up:
        ifname = state.ifname or resolver.decider.tunnel_label
        refused = replies.refused_tunnel_down(query, data, ifname, wire.OUR_UDP_PAYLOAD)
        return {
            "outcome": "refused-tunnel-down",
            "reason": f"tunnel {ifname} is down: nothing is forwarded, and nothing falls back",
            "interface": ifname,
            **_answer(refused),
        }
    forward = _forward(resolver, query, state, now)
    return {"outcome": "forwarded", "reason": _forward_reason(forward), **forward}


def _head(name: str, rdtype: str) -> Result:
    return {"ok": True, "name": name, "type": rdtype.upper()}


def _tunnel(state: TunnelState) -> Result:
    return {"up": state.up, "ifname": state.ifname, "addresses": list(state.addresses)}


def _local(match: Match) -> Result:
    zone = wire.decode_name(match.zone)
    reason = RULE_REASONS[match.rule]
    detail: Result = {"rule": match.rule.value, "matched": zone}
    if match.rule is Rule.SPECIAL_USE:
        reason = f"{reason}: {zone} ({_SPECIAL_USE.get(zone, 'reserved')})"
    elif match.rule is Rule.PRIVATE_REVERSE and match.network is not None:
        detail["range"] = str(match.network)
        reason = f"{reason}: inside {match.network}"
    elif match.rule is Rule.BLOCK_LIST:
        reason = f"{reason}: listed {zone}"
    return {**detail, "reason": reason}


def _answer(response: bytes) -> Result:
    """The rcode, answer records and EDE of a response we would send."""
    msg = dns.message.from_wire(response)
    out: Result = {
        "rcode": dns.rcode.to_text(msg.rcode()),
        "answers": [line for rrset in msg.answer for line in rrset.to_text().splitlines()],
    }
    for option in msg.options:
        if option.otype == dns.edns.EDE and isinstance(option, dns.edns.EDEOption):
            out["ede"] = {"code": int(option.code), "text": option.text}
    return out


def _flags(bits: int) -> str:
    return " ".join(text for bit, text in _KEY_BITS if bits & bit) or "no flags"


def _cached(resolver: Resolver, query: wire.Query, now: float) -> list[Result]:
    """Every cached form of this question (the cache keeps forms apart by their flags,
    wire.Query.cache_key), as a hit would serve it now. Empty without a cache."""
    cache = resolver.cache
    if cache is None:
        return []
    found: list[Result] = []
    for bits in range(wire.KEY_ALL + 1):
        entry = cache.peek(wire.cache_key_with(query, bits), query.msg_id, query.qname, now)
        if entry is not None:
            found.append(
                {"flags": _flags(bits), "ttl_left": entry.ttl_left, **_answer(entry.response)}
            )
    found.sort(key=lambda item: -int(item["ttl_left"]))
    return found


def _forward(resolver: Resolver, query: wire.Query, state: TunnelState, now: float) -> Result:
    """Where the query would go: the route, the upstreams in the order they would be
    tried, the interface and source addresses, and whether it would join a flight."""
    router = resolver.router
    if router is not None:
        choice = router.choose(query.qname_lower)
        kind, candidates = choice.kind, choice.upstreams
        suffix = wire.decode_name(choice.suffix) if choice.suffix is not None else None
    else:
        kind, candidates, suffix = "default", tuple(range(len(resolver.upstreams))), None
    order = resolver.selection.order(now, candidates)
    upstreams: list[Result] = []
    for index in order:
        upstream = resolver.upstreams[index]
        health = resolver.health[index]
        item: Result = {
            "url": health.url,
            "healthy": health.healthy,
            "srtt_ms": round(health.srtt * 1000, 3) if health.answers else None,
            "failures": health.failures,
        }
        if not health.healthy:
            item["last_error"] = health.last_error
            item["resting_s"] = round(max(0.0, health.retry_at - now), 3)
        if isinstance(upstream, VpnUpstream):
            try:
                item["servers"] = upstream.servers_now(state)
            except UpstreamError as exc:
                item["servers"] = []
                item["fails"] = exc.message
        upstreams.append(item)
    return {
        "route": {"kind": kind, "suffix": suffix},
        "upstreams": upstreams,
        "interface": state.ifname,
        "source_addresses": list(state.addresses),
        "joins_flight": resolver.flights.current(query.key, state.epoch) is not None,
    }


def _forward_reason(forward: Result) -> str:
    route = forward["route"]
    if route["kind"] == "route":
        via = f"route {route['suffix']} (routes)"
    elif route["kind"] == "announced":
        via = f"the VPN announced {route['suffix']}"
    else:
        via = "the default upstreams (no route matches)"
    first = forward["upstreams"][0]["url"] if forward["upstreams"] else "-"
    return f"forwarded through tunnel {forward['interface']} by {via}, to {first} first"
