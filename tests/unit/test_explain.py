"""explain: one result per kind of outcome, from a resolver built from a real config exactly
as the daemon builds it (app.build_resolver), and proof that explaining changes nothing:
no cache counters or LRU move, no hot-query memo, no outcome, no upstream socket."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest
import yaml

from stubresolver import wire
from stubresolver.announce import Announced, Announcement
from stubresolver.app import build_resolver
from stubresolver.cli import format_explain
from stubresolver.config import load_config
from stubresolver.decide import AnswerNow, Forward
from stubresolver.errors import UpstreamError
from stubresolver.explain import RULE_REASONS, explain, probe
from stubresolver.outcome import Outcome
from stubresolver.policy import LocalPolicy, Match, Rule
from stubresolver.resolver import Resolver
from stubresolver.tunnel import TunnelMonitor
from stubresolver.tunnel_state import TunnelState

UP = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("10.66.0.2",), epoch=1)
UP6 = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("10.66.0.2", "fd66::2"), epoch=1)
DOWN = TunnelState(up=False, ifname=None, ifindex=None, addresses=(), epoch=2)
NOW = 1000.0


def make(tmp_path: Path, **overrides: Any) -> tuple[Resolver, Announced]:
    config: dict[str, Any] = {
        "listen": ["127.0.0.1:53"],
        "tunnel": {"interfaces": ["wg*"]},
        "upstreams": ["udp://10.66.0.53", "tls://10.66.0.54#dns.example", "vpn"],
        "routes": {"corp.example": ["udp://10.66.0.80"]},
        "local": {"records": ["printer.lan. 300 IN A 192.168.1.5"]},
        "bootstrap_hosts": {"vpn.example.net": ["198.51.100.7"]},
    }
    config.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    announced = Announced()
    resolver = build_resolver(load_config(path), TunnelMonitor(("wg*",)), announced)
    return resolver, announced


def untouched(resolver: Resolver) -> None:
    """What explaining must leave alone."""
    assert not resolver.stats.outcomes
    assert len(resolver.decider.hot) == 0
    if resolver.cache is not None:
        assert (resolver.cache.hits, resolver.cache.misses) == (0, 0)
    for upstream in resolver.upstreams:
        counters = upstream.counters()
        assert counters.get("open_sockets", 0) == 0
        assert counters.get("open_connections", 0) == 0


@pytest.mark.parametrize(
    ("name", "rdtype", "rule", "matched", "rcode"),
    [
        ("printer.lan.", "A", "local.records", "printer.lan.", "NOERROR"),
        ("vpn.example.net", "A", "bootstrap_hosts", "vpn.example.net.", "NOERROR"),
        ("localhost", "AAAA", "localhost", "localhost.", "NOERROR"),
        ("app.localhost", "A", "localhost", "localhost.", "NOERROR"),
        ("use-application-dns.net", "A", "canary", "use-application-dns.net.", "NXDOMAIN"),
        ("mask-h2.icloud.com", "HTTPS", "canary", "mask-h2.icloud.com.", "NXDOMAIN"),
        ("nas.home.arpa", "A", "special-use", "home.arpa.", "NXDOMAIN"),
        ("x.onion", "A", "special-use", "onion.", "NXDOMAIN"),
        ("router.internal", "A", "special-use", "internal.", "NXDOMAIN"),
        ("printer.local", "A", "special-use", "local.", "NXDOMAIN"),
        ("a.invalid", "A", "special-use", "invalid.", "NXDOMAIN"),
        ("_dns.resolver.arpa", "SVCB", "resolver.arpa", "resolver.arpa.", "NOERROR"),
        ("x.resolver.arpa", "A", "resolver.arpa", "resolver.arpa.", "NXDOMAIN"),
        ("nas", "A", "single-label", "nas.", "NXDOMAIN"),
        ("lan", "A", "single-label", "lan.", "NOERROR"),  # above a record: RFC 8020
    ],
)
def test_local_rules(
    tmp_path: Path, name: str, rdtype: str, rule: str, matched: str, rcode: str
) -> None:
    resolver, _ = make(tmp_path)
    result = explain(resolver, name, rdtype, UP, NOW)
    assert result["outcome"] == "local"
    assert (result["rule"], result["matched"], result["rcode"]) == (rule, matched, rcode)
    assert result["reason"]
    untouched(resolver)


def test_local_answers_carry_the_records(tmp_path: Path) -> None:
    resolver, _ = make(tmp_path)
    result = explain(resolver, "Printer.LAN", "A", DOWN, NOW)  # any tunnel state
    assert result["answers"] == ["Printer.LAN. 300 IN A 192.168.1.5"]  # the asked spelling
    assert result["name"] == "printer.lan."
    text = format_explain(result)
    assert "answered locally" in text and "local.records" in text and "192.168.1.5" in text


def test_block_list_names_the_listed_parent(tmp_path: Path) -> None:
    listed = tmp_path / "block.txt"
    listed.write_text("dns.google\n")
    resolver, _ = make(tmp_path, policy={"block_list": str(listed)})
    result = explain(resolver, "x.dns.google", "A", UP, NOW)
    assert (result["rule"], result["matched"], result["rcode"]) == (
        "block-list",
        "dns.google.",
        "NXDOMAIN",
    )
    assert "dns.google." in result["reason"]


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("192.168.1.1", "192.168.0.0/16"),
        ("10.1.2.3", "10.0.0.0/8"),
        ("100.64.0.9", "100.64.0.0/10"),
        ("fe80::1", "fe80::/10"),
        ("::ffff:192.168.1.1", "::ffff:0:0/96"),
    ],
)
def test_private_reverse_names_the_range(tmp_path: Path, address: str, private: str) -> None:
    resolver, _ = make(tmp_path)
    name = ipaddress.ip_address(address).reverse_pointer
    result = explain(resolver, name, "PTR", UP, NOW)
    assert (result["rule"], result["range"], result["rcode"]) == (
        "private-reverse",
        private,
        "NXDOMAIN",
    )
    assert private in result["reason"]


def test_reverse_via_vpn_and_public_reverse_are_forwarded(tmp_path: Path) -> None:
    resolver, _ = make(tmp_path, local={"reverse_via_vpn": ["10.66.0.0/24"]})
    for address in ("10.66.0.53", "8.8.8.8"):
        name = ipaddress.ip_address(address).reverse_pointer
        assert explain(resolver, name, "PTR", UP, NOW)["outcome"] == "forwarded"


def test_aaaa_policy(tmp_path: Path) -> None:
    resolver, _ = make(tmp_path)
    result = explain(resolver, "www.example", "AAAA", UP, NOW)  # no IPv6 in the tunnel
    assert result["outcome"] == "aaaa-nodata"
    assert result["rule"] == "policy.aaaa"
    assert result["ede"]["code"] == 17
    assert explain(resolver, "www.example", "AAAA", UP6, NOW)["outcome"] == "forwarded"
    never, _ = make(tmp_path, policy={"aaaa": "never"})
    assert explain(never, "www.example", "AAAA", UP6, NOW)["outcome"] == "aaaa-nodata"
    always, _ = make(tmp_path, policy={"aaaa": "always"})
    assert explain(always, "www.example", "AAAA", UP, NOW)["outcome"] == "forwarded"
    untouched(resolver)


def store(resolver: Resolver, name: str, *, use_edns: int | bool, ttl: int = 300) -> None:
    msg = dns.message.make_query(name, "A", use_edns=use_edns)
    data = msg.to_wire()
    response = dns.message.make_response(msg)
    response.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "192.0.2.1"))
    assert resolver.cache is not None
    assert resolver.cache.store(wire.parse_query(data), response.to_wire(), NOW)


def test_cached_with_the_ttl_left_and_nothing_moves(tmp_path: Path) -> None:
    resolver, _ = make(tmp_path)
    store(resolver, "www.example.", use_edns=False, ttl=300)
    store(resolver, "other.example.", use_edns=0, ttl=60)
    assert resolver.cache is not None
    order_before = list(resolver.cache._entries)
    result = explain(resolver, "WWW.example", "A", UP, NOW + 40.5)
    assert result["outcome"] == "cached"
    [entry] = result["cache"]
    assert entry["flags"] == "RD"  # the form glibc asks in: RD, no EDNS
    assert entry["ttl_left"] == 260  # as a hit ages the TTLs: whole seconds
    assert entry["answers"] == ["WWW.example. 260 IN A 192.0.2.1"]  # the asked spelling
    # A query in another form (EDNS) misses and would be forwarded: say where.
    assert result["miss"]["outcome"] == "forwarded"
    assert result["miss"]["upstreams"][0]["url"] == "udp://10.66.0.53"
    assert "260 s left" in format_explain(result)
    assert list(resolver.cache._entries) == order_before  # no LRU move
    untouched(resolver)
    # Expired: not served; the entry stays for the next real lookup to drop.
    assert explain(resolver, "www.example", "A", UP, NOW + 301)["outcome"] == "forwarded"
    assert len(resolver.cache) == 2
    untouched(resolver)


def test_tunnel_down_refuses_and_names_the_interface(tmp_path: Path) -> None:
    resolver, _ = make(tmp_path)
    result = explain(resolver, "www.example", "A", DOWN, NOW)
    assert result["outcome"] == "refused-tunnel-down"
    assert result["interface"] == "wg*"  # no device: the configured pattern
    assert result["rcode"] == "REFUSED"
    assert result["ede"] == {"code": 23, "text": "tunnel wg* down"}
    gone = TunnelState(up=False, ifname="wg0", ifindex=7, addresses=(), epoch=3)
    assert explain(resolver, "www.example", "A", gone, NOW)["interface"] == "wg0"
    assert "REFUSED" in format_explain(result)
    untouched(resolver)


def test_cache_is_served_while_the_tunnel_is_down_as_decide_does(tmp_path: Path) -> None:
    """With the cache kept across tunnel changes, a cached answer comes before the gate;
    a query in another form is refused. The real decider agrees."""
    resolver, _ = make(tmp_path, cache={"flush_on_tunnel_change": False})
    store(resolver, "www.example.", use_edns=False)
    result = explain(resolver, "www.example", "A", DOWN, NOW + 1)
    assert result["outcome"] == "cached"
    assert result["miss"]["outcome"] == "refused-tunnel-down"
    assert "a query in another form: REFUSED" in format_explain(result)
    untouched(resolver)
    plain = dns.message.make_query("www.example.", "A", use_edns=False).to_wire()
    assert resolver.decider.decide(plain, DOWN, NOW + 1).outcome is Outcome.CACHED  # type: ignore[union-attr]
    edns = dns.message.make_query("www.example.", "A", use_edns=0).to_wire()
    decision = resolver.decider.decide(edns, DOWN, NOW + 1)
    assert decision.outcome is Outcome.REFUSED_TUNNEL_DOWN  # type: ignore[union-attr]


def test_forwarded_default_route_in_health_order(tmp_path: Path) -> None:
    resolver, announced = make(tmp_path)
    result = explain(resolver, "www.example", "A", UP, NOW)
    assert result["outcome"] == "forwarded"
    assert result["route"] == {"kind": "default", "suffix": None}
    assert [u["url"] for u in result["upstreams"]] == [
        "udp://10.66.0.53",
        "tls://10.66.0.54#dns.example",
        "vpn",
    ]
    assert result["interface"] == "wg0"
    assert result["source_addresses"] == ["10.66.0.2"]
    assert result["upstreams"][2]["servers"] == []
    assert "announced no DNS server" in result["upstreams"][2]["fails"]
    # The first upstream fails: the ledger rests it, and explain shows the order now.
    resolver.selection.failure(0, UpstreamError("timeout", "udp://10.66.0.53", "no answer"), NOW)
    resolver.selection.success(1, 0.004)
    result = explain(resolver, "www.example", "A", UP, NOW + 1)
    assert [u["url"] for u in result["upstreams"]][-1] == "udp://10.66.0.53"
    assert result["upstreams"][-1]["resting_s"] == 4.0
    # Untried upstreams (srtt 0) come before a measured one: the ledger's real order.
    assert [u["url"] for u in result["upstreams"]][:2] == ["vpn", "tls://10.66.0.54#dns.example"]
    assert result["upstreams"][1]["srtt_ms"] == 4.0
    text = format_explain(result)
    assert "resting 4.0 s" in text and "default upstreams" in text
    # The VPN announces servers for wg0: the vpn upstream would ask them, in order.
    announced.set(Announcement("wg0", ("10.66.0.1", "10.66.0.9")))
    vpn = explain(resolver, "www.example", "A", UP, NOW + 1)["upstreams"]
    assert [u["servers"] for u in vpn if u["url"] == "vpn"] == [["10.66.0.1", "10.66.0.9"]]
    # ... but never through another tunnel.
    other = TunnelState(up=True, ifname="wg1", ifindex=8, addresses=("10.67.0.2",), epoch=4)
    vpn = explain(resolver, "www.example", "A", other, NOW + 1)["upstreams"]
    assert "announced for wg0" in next(u["fails"] for u in vpn if u["url"] == "vpn")
    untouched(resolver)


def test_forwarded_by_route_and_by_announced_domain(tmp_path: Path) -> None:
    resolver, announced = make(tmp_path)
    result = explain(resolver, "a.b.Corp.Example", "A", UP, NOW)
    assert result["route"] == {"kind": "route", "suffix": "corp.example."}
    assert [u["url"] for u in result["upstreams"]] == ["udp://10.66.0.80"]
    assert "route corp.example." in result["reason"]
    assert explain(resolver, "xcorp.example", "A", UP, NOW)["route"]["kind"] == "default"
    announced.set(Announcement("wg0", ("10.66.0.1",), ("vpn.internal.example",)))
    result = explain(resolver, "git.vpn.internal.example", "A", UP, NOW)
    assert result["route"] == {"kind": "announced", "suffix": "vpn.internal.example."}
    assert [u["url"] for u in result["upstreams"]] == ["vpn"]
    assert result["upstreams"][0]["servers"] == ["10.66.0.1"]
    untouched(resolver)


@pytest.mark.parametrize("name", ["a..example", "x" * 64 + ".example", ".".join(["abc"] * 80)])
def test_malformed_name_is_refused(tmp_path: Path, name: str) -> None:
    resolver, _ = make(tmp_path)
    result = explain(resolver, name, "A", UP, NOW)
    assert result["outcome"] == "refused-malformed-name"
    assert result["rcode"] == "REFUSED"
    assert "REFUSED: malformed name" in format_explain(result)


def test_unknown_type_is_a_request_error(tmp_path: Path) -> None:
    resolver, _ = make(tmp_path)
    with pytest.raises(ValueError, match="not a DNS type"):
        explain(resolver, "www.example", "NOSUCH", UP, NOW)
    assert explain(resolver, "www.example", "type65", UP6, NOW)["type"] == "HTTPS"


def test_classify_is_what_answer_uses() -> None:
    """The hot path's answer is build(classify(...)): the same rule for both."""
    policy = LocalPolicy(single_label_nxdomain=True)
    for name, rule in (("nas.home.arpa.", Rule.SPECIAL_USE), ("localhost.", Rule.LOCALHOST)):
        data = dns.message.make_query(name, "A").to_wire()
        query = wire.parse_query(data)
        match = policy.classify(query)
        assert isinstance(match, Match) and match.rule is rule
        assert policy.answer(query, data) == policy.build(match, query, data)
    data = dns.message.make_query("www.example.", "A").to_wire()
    query = wire.parse_query(data)
    assert policy.classify(query) is None and policy.answer(query, data) is None


def test_every_rule_has_a_reason() -> None:
    assert set(RULE_REASONS) == set(Rule)


EXPECTED = {
    "local": Outcome.LOCAL,
    "aaaa-nodata": Outcome.LOCAL,
    "cached": Outcome.CACHED,
    "refused-tunnel-down": Outcome.REFUSED_TUNNEL_DOWN,
}


@pytest.mark.parametrize(
    ("name", "rdtype", "state"),
    [
        ("printer.lan.", "A", UP),
        ("vpn.example.net.", "AAAA", DOWN),
        ("nas.home.arpa.", "A", UP),
        ("mask.icloud.com.", "A", UP),
        ("com.", "NS", UP),  # single label, but a zone type: forwarded
        ("nas.", "A", UP),
        ("1.1.168.192.in-addr.arpa.", "PTR", UP),
        ("8.8.8.8.in-addr.arpa.", "PTR", UP),
        ("www.example.", "AAAA", UP),
        ("www.example.", "AAAA", UP6),
        ("www.example.", "A", UP),
        ("cached.example.", "A", UP),
        ("cached.example.", "A", DOWN),
        ("www.example.", "A", DOWN),
        ("x.corp.example.", "A", UP),
    ],
)
def test_explain_says_what_decide_does(
    tmp_path: Path, name: str, rdtype: str, state: TunnelState
) -> None:
    """The same probe bytes through the hot path's decider give the outcome explain named
    (explain first: the decider counts and remembers, explain must not)."""
    resolver, _ = make(tmp_path, cache={"flush_on_tunnel_change": False})
    store(resolver, "cached.example.", use_edns=0)
    result = explain(resolver, name, rdtype, state, NOW)
    untouched(resolver)
    decision = resolver.decider.decide(probe(name, rdtype), state, NOW)
    if result["outcome"] == "forwarded":
        assert isinstance(decision, Forward)
    else:
        assert isinstance(decision, AnswerNow)
        assert decision.outcome is EXPECTED[result["outcome"]]
