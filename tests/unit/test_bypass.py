"""Bypass suppression (issue 10): the canaries that turn off a browser's or an OS's own
resolver path, the DoH block list, and the AAAA policy that keeps clients off IPv6 paths
outside an IPv4-only tunnel. Pure: the policy and the decider, no sockets."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from stubresolver import wire
from stubresolver.cache import Cache
from stubresolver.config import parse_config, read_block_list
from stubresolver.decide import AnswerNow, Decider, Forward
from stubresolver.errors import ConfigError
from stubresolver.outcome import Outcome
from stubresolver.policy import LocalPolicy
from stubresolver.tunnel_state import TunnelState

V4_ONLY = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("10.66.0.2",), epoch=1)
DUAL = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("10.66.0.2", "fd00:66::2"), epoch=2)
DOWN = TunnelState(up=False, ifname="wg0", ifindex=7, addresses=(), epoch=3)


def ask(policy: LocalPolicy, name: str, rdtype: str = "A") -> dns.message.Message | None:
    data = dns.message.make_query(name, rdtype).to_wire()
    reply = policy.answer(wire.parse_query(data), data)
    return None if reply is None else dns.message.from_wire(reply)


@pytest.mark.parametrize(
    "name", ["mask.icloud.com.", "MASK-h2.iCloud.com.", "use-application-dns.net."]
)
@pytest.mark.parametrize("rdtype", ["A", "AAAA", "HTTPS", "TXT"])
def test_canaries_are_nxdomain_for_every_type(name: str, rdtype: str) -> None:
    reply = ask(LocalPolicy(), name, rdtype)
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name", ["icloud.com.", "www.icloud.com.", "xmask.icloud.com."])
def test_names_beside_the_canaries_are_forwarded(name: str) -> None:
    assert ask(LocalPolicy(), name) is None


def write_list(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doh.txt"
    path.write_text(text)
    return path


def test_block_list_blocks_names_and_below_only(tmp_path: Path) -> None:
    path = write_list(tmp_path, "# public DoH\ndns.google\nCloudflare-DNS.com.  # trailing\n\n")
    policy = LocalPolicy(blocked=read_block_list(path, "policy.block_list"))
    for name in ("dns.google.", "x.dns.google.", "cloudflare-dns.com.", "a.b.CLOUDFLARE-dns.com."):
        reply = ask(policy, name, "HTTPS")
        assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN, name
    for name in ("www.google.", "xdns.google.", "mozilla.cloudflare-dns.net.", "example.com."):
        assert ask(policy, name) is None, name


def test_block_list_errors_name_the_key_and_line(tmp_path: Path) -> None:
    bad = write_list(tmp_path, "dns.google\nbad..name\n")
    with pytest.raises(ConfigError) as exc:
        parse_config({"upstreams": ["udp://10.0.0.1"], "policy": {"block_list": str(bad)}})
    assert "policy.block_list" in str(exc.value) and "line 2" in str(exc.value)
    with pytest.raises(ConfigError, match=r"policy\.block_list.*cannot read"):
        parse_config(
            {"upstreams": ["udp://10.0.0.1"], "policy": {"block_list": str(tmp_path / "no")}}
        )
    with pytest.raises(ConfigError, match=r"policy\.aaaa.*'sometimes' is not one of"):
        parse_config({"upstreams": ["udp://10.0.0.1"], "policy": {"aaaa": "sometimes"}})
    with pytest.raises(ConfigError, match=r"policy\.other: unknown key"):
        parse_config({"upstreams": ["udp://10.0.0.1"], "policy": {"other": 1}})


def decide(decider: Decider, state: TunnelState, rdtype: str = "AAAA", **kw: object) -> object:
    data = dns.message.make_query("www.example.", rdtype, **kw).to_wire()  # type: ignore[arg-type]
    return decider.decide(data, state, 100.0)


def nodata(decision: object) -> dns.message.Message:
    assert isinstance(decision, AnswerNow) and decision.outcome is Outcome.LOCAL
    reply = dns.message.from_wire(decision.response)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    return reply


def test_aaaa_auto_follows_the_tunnels_addresses() -> None:
    decider = Decider(cache=Cache(), policy=LocalPolicy(), tunnel_label="wg*")
    reply = nodata(decide(decider, V4_ONLY, use_edns=0))
    ede = [o for o in reply.options if o.otype == dns.edns.EDE]
    assert ede and ede[0].code == 17  # RFC 8914 4.18 Filtered
    assert not nodata(decide(decider, V4_ONLY)).opt  # no OPT to a client without one
    assert isinstance(decide(decider, DUAL), Forward)
    assert isinstance(decide(decider, V4_ONLY, "A"), Forward)
    down = decide(decider, DOWN)
    assert isinstance(down, AnswerNow) and down.outcome is Outcome.REFUSED_TUNNEL_DOWN


def test_aaaa_always_and_never() -> None:
    always = Decider(cache=None, policy=LocalPolicy(), tunnel_label="wg*", aaaa="always")
    assert isinstance(decide(always, V4_ONLY), Forward)
    never = Decider(cache=None, policy=LocalPolicy(), tunnel_label="wg*", aaaa="never")
    nodata(decide(never, DUAL))
    assert isinstance(decide(never, DUAL, "A"), Forward)


def test_a_cached_aaaa_answer_is_not_served_once_the_tunnel_loses_ipv6() -> None:
    cache = Cache()
    decider = Decider(cache=cache, policy=LocalPolicy(), tunnel_label="wg*")
    data = dns.message.make_query("www.example.", "AAAA").to_wire()
    forward = decider.decide(data, DUAL, 100.0)
    assert isinstance(forward, Forward)
    reply = dns.message.make_response(dns.message.from_wire(data))
    reply.answer.append(dns.rrset.from_text("www.example.", 300, "IN", "AAAA", "2001:db8::1"))
    cache.store(forward.query, reply.to_wire(), 100.0)
    for _ in range(3):  # the second ask takes the hot path, which must check too
        hit = decider.decide(data, DUAL, 101.0)
        assert isinstance(hit, AnswerNow) and hit.outcome is Outcome.CACHED
    nodata(decider.decide(data, V4_ONLY, 102.0))
