"""policy: names answered locally at any tunnel state (RFC 6761, RFC 6762, RFC 6303)."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.rcode
import dns.reversename
import pytest

from stubresolver import wire
from stubresolver.policy import LocalPolicy, reverse_network


def ask(policy: LocalPolicy, name: str, rdtype: str = "A") -> dns.message.Message | None:
    data = dns.message.make_query(name, rdtype).to_wire()
    reply = policy.answer(wire.parse_query(data), data)
    return None if reply is None else dns.message.from_wire(reply)


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        ("localhost.", "A", "127.0.0.1"),
        ("LocalHost.", "AAAA", "::1"),
        ("app.localhost.", "A", "127.0.0.1"),
    ],
)
def test_localhost(name: str, rdtype: str, expected: str) -> None:
    reply = ask(LocalPolicy(), name, rdtype)
    assert reply is not None
    assert reply.rcode() == dns.rcode.NOERROR
    assert [r.to_text() for r in reply.answer[0]] == [expected]


def test_localhost_other_types_have_no_data() -> None:
    reply = ask(LocalPolicy(), "localhost.", "MX")
    assert reply is not None
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.answer


@pytest.mark.parametrize(
    "name",
    [
        "invalid.",
        "x.invalid.",
        "printer.local.",
        "local.",
        "use-application-dns.net.",
        # RFC 8375, ICANN's private-use TLD, RFC 7686: never asked upstream.
        "home.arpa.",
        "nas.home.arpa.",
        "router.Internal.",
        "internal.",
        "onion.",
        "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion.",
        # RFC 9462: only _dns exists below resolver.arpa.
        "resolver.arpa.",
        "x._dns.resolver.arpa.",
        "other.resolver.arpa.",
        # Single-label names: search-list and LAN lookups.
        "printer.",
        "NAS.",
    ],
)
def test_nxdomain_names(name: str) -> None:
    reply = ask(LocalPolicy(), name)
    assert reply is not None
    assert reply.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    "name",
    [
        "www.example.",
        "xuse-application-dns.net.",
        "sub.use-application-dns.net.",
        "notlocal.example.",
        "localhost.example.",
        "home.arpa.example.",
        "onion.example.",
        "x.resolver.arpa.example.",
        "invalid.example.",
    ],
)
def test_forwarded_names(name: str) -> None:
    assert ask(LocalPolicy(), name) is None


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "172.31.255.255",
        "169.254.1.1",
        "127.0.0.1",
        "100.64.0.1",
        "fd00::1",
        "fe80::1",
        "::1",
    ],
)
def test_private_reverse_is_nxdomain(address: str) -> None:
    reply = ask(LocalPolicy(), dns.reversename.from_address(address).to_text(), "PTR")
    assert reply is not None
    assert reply.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("address", ["8.8.8.8", "172.32.0.1", "192.0.3.1", "2606:4700::1111"])
def test_public_reverse_is_forwarded(address: str) -> None:
    assert ask(LocalPolicy(), dns.reversename.from_address(address).to_text(), "PTR") is None


def test_partial_reverse_zones() -> None:
    policy = LocalPolicy()
    assert ask(policy, "168.192.in-addr.arpa.", "SOA") is not None  # inside 192.168/16
    assert ask(policy, "172.in-addr.arpa.", "SOA") is None  # 172/8 is mostly public
    assert ask(policy, "in-addr.arpa.", "SOA") is None


def test_reverse_via_vpn() -> None:
    policy = LocalPolicy([ipaddress.ip_network("10.8.0.0/24")])
    assert ask(policy, "5.0.8.10.in-addr.arpa.", "PTR") is None
    assert ask(policy, "5.0.9.10.in-addr.arpa.", "PTR") is not None


def test_reverse_network() -> None:
    assert str(reverse_network(b"\x0210\x07in-addr\x04arpa\x00")) == "10.0.0.0/8"
    name = wire.encode_name(dns.reversename.from_address("fd00::1").to_text())
    assert str(reverse_network(name)) == "fd00::1/128"
    assert reverse_network(b"\x03300\x07in-addr\x04arpa\x00") is None


@pytest.mark.parametrize(
    "name",
    [
        # DNS-SD browse-domain discovery (RFC 6763 11) is sent by avahi/mDNSResponder for the
        # host's own subnet: forwarding it tells the VPN's resolver the LAN is 192.168.1/24.
        "b._dns-sd._udp.0.1.168.192.in-addr.arpa.",
        "lb._dns-sd._udp.0.0.10.in-addr.arpa.",
        "x.10.in-addr.arpa.",
        "x.8.e.f.ip6.arpa.",
    ],
)
def test_names_below_private_reverse_zones_stay_local(name: str) -> None:
    # RFC 6303 3: the whole zone is served locally, not only names that spell an address.
    reply = ask(LocalPolicy(), name, "PTR")
    assert reply is not None
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_reverse_via_vpn_in_ip6_and_partial_names() -> None:
    policy = LocalPolicy([ipaddress.ip_network("fd00:aa::/32")])
    inside = dns.reversename.from_address("fd00:aa::5").to_text()
    outside = dns.reversename.from_address("fd00:bb::5").to_text()
    assert ask(policy, inside, "PTR") is None
    assert ask(policy, outside, "PTR") is not None
    # A partial name overlapping the VPN range goes to the VPN (it may hold the answer).
    assert ask(LocalPolicy([ipaddress.ip_network("10.8.0.0/24")]), "10.in-addr.arpa.") is None


def test_local_answers_echo_edns_and_are_authoritative() -> None:
    data = dns.message.make_query("localhost.", "A", use_edns=0, want_dnssec=True).to_wire()
    reply = LocalPolicy().answer(wire.parse_query(data), data)
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.edns == 0
    assert msg.flags & dns.flags.AA
    assert msg.answer[0].ttl == 0


@pytest.mark.parametrize("rdtype", ["SVCB", "A", "HTTPS"])
def test_ddr_name_has_no_data(rdtype: str) -> None:
    reply = ask(LocalPolicy(), "_dns.resolver.arpa.", rdtype)
    assert reply is not None
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.answer


def test_single_label_names_can_be_forwarded() -> None:
    assert ask(LocalPolicy(single_label_nxdomain=False), "printer.") is None
    assert ask(LocalPolicy(single_label_nxdomain=False), "onion.") is not None


@pytest.mark.parametrize("rdtype", ["SOA", "NS", "DS", "DNSKEY"])
def test_a_top_level_zone_itself_is_still_asked_about(rdtype: str) -> None:
    # Validators and `dig com NS` ask for these; NXDOMAIN would deny the whole zone.
    assert ask(LocalPolicy(), "com.", rdtype) is None
    assert ask(LocalPolicy(), ".", "NS") is None


@pytest.mark.parametrize(
    "address",
    [
        "192.0.2.1",
        "198.51.100.77",
        "203.0.113.254",
        "2001:db8::1",
        "::ffff:10.1.2.3",
        "::ffff:192.168.1.1",
        "::ffff:8.8.8.8",
    ],
)
def test_documentation_and_v4_mapped_reverse_is_local(address: str) -> None:
    # ipaddress spells IPv4-mapped addresses under ip6.arpa (dnspython would use in-addr).
    reply = ask(LocalPolicy(), ipaddress.ip_address(address).reverse_pointer + ".", "PTR")
    assert reply is not None
    assert reply.rcode() == dns.rcode.NXDOMAIN


def test_reverse_via_vpn_covers_the_v4_mapped_spelling() -> None:
    policy = LocalPolicy([ipaddress.ip_network("10.8.0.0/24")])
    mapped = ipaddress.ip_address("::ffff:10.8.0.1").reverse_pointer + "."
    assert ask(policy, mapped, "PTR") is None
    other = ipaddress.ip_address("::ffff:10.9.0.1").reverse_pointer + "."
    reply = ask(policy, other, "PTR")
    assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN
    assert (
        ask(
            LocalPolicy([ipaddress.ip_network("2001:db8:1::/48")]),
            dns.reversename.from_address("2001:db8:1::5").to_text(),
            "PTR",
        )
        is None
    )


# --- local.records (dnslib's zone parser in config, answers here) ------------------------

RECORDS = [
    "printer.lan. 300 IN A 192.168.1.5",
    "printer.lan. 300 IN A 192.168.1.6",
    "nas.home.arpa. IN AAAA fd00::5",
    "www.nas.home.arpa. 60 IN CNAME nas.home.arpa.",
    "mail.lan. IN MX 10 printer.lan.",
]


def records_policy(*, single_label_nxdomain: bool = True) -> LocalPolicy:
    from stubresolver.config import parse_config

    config = parse_config({"upstreams": ["udp://10.8.0.1"], "local": {"records": RECORDS}})
    return LocalPolicy(single_label_nxdomain=single_label_nxdomain, records=config.local.records)


def test_records_answer_their_type() -> None:
    reply = ask(records_policy(), "Printer.LAN.", "A")
    assert reply is not None
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    (rrset,) = reply.answer
    assert sorted(r.to_text() for r in rrset) == ["192.168.1.5", "192.168.1.6"]
    assert rrset.ttl == 300
    assert rrset.name == dns.name.from_text("Printer.LAN.")  # the client's spelling
    aaaa = ask(records_policy(), "nas.home.arpa.", "AAAA")
    assert aaaa is not None
    assert [r.to_text() for r in aaaa.answer[0]] == ["fd00::5"]
    assert aaaa.answer[0].ttl == 3600  # no TTL on the line: unbound's local-data default
    mx = ask(records_policy(), "mail.lan.", "MX")
    assert mx is not None
    assert [r.to_text() for r in mx.answer[0]] == ["10 printer.lan."]


def test_records_give_nodata_for_another_type_and_cname_for_any() -> None:
    reply = ask(records_policy(), "printer.lan.", "AAAA")
    assert reply is not None
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    cname = ask(records_policy(), "www.nas.home.arpa.", "A")
    assert cname is not None
    assert [r.to_text() for r in cname.answer[0]] == ["nas.home.arpa."]
    assert cname.answer[0].rdtype == dns.rdatatype.CNAME


def test_records_win_only_for_their_own_names() -> None:
    policy = records_policy()
    for name in ("other.home.arpa.", "x.nas.home.arpa.", "home.local."):
        reply = ask(policy, name)
        assert reply is not None and reply.rcode() == dns.rcode.NXDOMAIN, name
    # Above a record, a locally denied name exists (RFC 8020): NODATA, not NXDOMAIN.
    for name in ("home.arpa.", "lan."):
        reply = ask(policy, name)
        assert reply is not None and reply.rcode() == dns.rcode.NOERROR, name
        assert not reply.answer
    # Everything else still goes to the tunnel, names below a record included.
    assert ask(policy, "example.com.") is None
    assert ask(policy, "x.printer.lan.") is None
    assert ask(records_policy(single_label_nxdomain=False), "lan.") is None


def test_records_answer_only_class_in() -> None:
    data = dns.message.make_query("printer.lan.", "A", rdclass="CH").to_wire()
    reply = records_policy().answer(wire.parse_query(data), data)
    # Not ours in class CH: the rest of the policy decides (printer.lan. is not local).
    assert reply is None
