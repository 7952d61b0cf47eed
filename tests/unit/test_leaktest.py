"""leaktest's pure parts: frames as captured, the system checks over their texts, and the
verdict with its exit status. The netns test runs the whole command for real."""

from __future__ import annotations

import ipaddress
import struct

import dns.message
import pytest

from stubresolver.leaktest import report, systemcheck
from stubresolver.leaktest.frames import ARPHRD_ETHER, ARPHRD_NONE, parse_frame
from stubresolver.leaktest.report import Step


def ipv4_udp(dst: str, dport: int, payload: bytes, src: str = "192.168.1.2") -> bytes:
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return header + udp


def ipv6_tcp(dst: str, dport: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40001, dport, 0, 0, 5 << 4, 0x18, 1000, 0, 0) + payload
    header = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64,
                         ipaddress.IPv6Address("fd00::2").packed,
                         ipaddress.IPv6Address(dst).packed)  # fmt: skip
    return header + tcp


ETHER_V4 = b"\x00" * 12 + b"\x08\x00"
ETHER_V6 = b"\x00" * 12 + b"\x86\xdd"
QUERY = dns.message.make_query("Leak.Example.", "A").to_wire()


def test_a_plain_dns_query_on_ethernet_names_its_question() -> None:
    seen = parse_frame(ETHER_V4 + ipv4_udp("198.18.1.1", 53, QUERY), "eth0", ARPHRD_ETHER)
    assert seen is not None
    assert (seen.proto, seen.dst, seen.dport, seen.qname) == (
        "udp",
        "198.18.1.1",
        53,
        "leak.example.",
    )
    assert seen.describe() == (
        "DNS on eth0: udp 192.168.1.2:40000 -> 198.18.1.1:53 asking leak.example. A"
    )


def test_tcp_dns_over_ipv6_skips_the_length_prefix() -> None:
    framed = struct.pack("!H", len(QUERY)) + QUERY
    seen = parse_frame(ETHER_V6 + ipv6_tcp("2001:db8::53", 53, framed), "wlan0", ARPHRD_ETHER)
    assert seen is not None and seen.proto == "tcp" and seen.qname == "leak.example."
    assert "[2001:db8::53]:53" in seen.describe()


def test_dot_and_doh_by_address_but_not_other_https() -> None:
    dot = parse_frame(ETHER_V4 + ipv4_udp("203.0.113.9", 853, b"x" * 20), "eth0", ARPHRD_ETHER)
    assert dot is not None and dot.kind == "DNS over TLS/QUIC" and dot.qname is None
    doh = parse_frame(ipv4_udp("1.1.1.1", 443, b"x" * 20), "tun9", ARPHRD_NONE)
    assert doh is not None and doh.kind.startswith("DoH")
    assert parse_frame(ETHER_V4 + ipv4_udp("203.0.113.9", 443, b""), "eth0", ARPHRD_ETHER) is None
    assert parse_frame(ETHER_V4 + ipv4_udp("203.0.113.9", 5353, QUERY), "eth0", 1) is None


@pytest.mark.parametrize("frame", [b"", b"\x00" * 13, ETHER_V4 + b"\x45" + b"\x00" * 5, b"\x60"])
def test_short_or_odd_frames_are_nothing(frame: bytes) -> None:
    assert parse_frame(frame, "eth0", ARPHRD_ETHER) is None
    assert parse_frame(frame, "tun0", ARPHRD_NONE) is None


STUB = ["127.0.0.1", "::1"]


def test_resolv_conf_must_name_only_the_stub() -> None:
    good = systemcheck.check_resolv_conf(
        "# ours\nnameserver 127.0.0.1\nnameserver ::1\noptions edns0\n", STUB, via_resolved=False
    )
    assert good.verdict == report.OK
    bad = systemcheck.check_resolv_conf(
        "nameserver 127.0.0.1\nnameserver 192.168.1.1 # router\n", STUB, via_resolved=False
    )
    assert bad.verdict == report.MISCONFIGURED
    assert bad.details[-1] == "nameserver 192.168.1.1: NOT the stub (queries may go there)"
    resolved = "nameserver 127.0.0.53\noptions edns0 trust-ad\n"
    assert systemcheck.check_resolv_conf(resolved, STUB, via_resolved=True).verdict == report.OK
    assert systemcheck.check_resolv_conf(resolved, STUB, via_resolved=False).verdict == (
        report.MISCONFIGURED
    )
    assert systemcheck.check_resolv_conf(None, STUB, via_resolved=False).verdict == (
        report.MISCONFIGURED
    )


def test_resolved_links_with_servers_of_their_own_are_named() -> None:
    clean = "Global: 127.0.0.1\nLink 1 (lo):\nLink 2 (eth0):\nLink 5 (wg0):\n"
    assert systemcheck.check_resolved(clean, STUB).verdict == report.OK
    leaky = "Global: 127.0.0.1\nLink 2 (eth0): 192.168.1.1 fe80::1%2\n"
    step = systemcheck.check_resolved(leaky, STUB)
    assert step.verdict == report.MISCONFIGURED
    assert "link eth0 has its own DNS servers 192.168.1.1 fe80::1" in step.details[0]
    assert "router advertisements" in step.details[0]
    assert systemcheck.check_resolved("Global:\n", STUB).verdict == report.MISCONFIGURED
    assert systemcheck.check_resolved(None, STUB).verdict == report.SKIPPED


def test_networkmanager_servers_are_named_and_ipv6_ones_flagged() -> None:
    text = (
        "GENERAL.DEVICE:eth0\nIP4.DNS[1]:192.168.1.1\nIP6.DNS[1]:fd00\\:\\:1\nGENERAL.DEVICE:lo\n"
    )
    assert systemcheck.networkmanager_servers(text) == [
        ("eth0", "192.168.1.1"),
        ("eth0", "fd00::1"),
    ]
    fine = systemcheck.check_networkmanager(text, resolv_conf_ok=True)
    assert fine.verdict == report.OK and "router advertisements" in fine.details[1]
    assert systemcheck.check_networkmanager(text, resolv_conf_ok=False).verdict == (
        report.MISCONFIGURED
    )


@pytest.mark.parametrize(
    ("verdicts", "code"),
    [
        ([report.OK, report.SKIPPED], 0),
        ([report.OK, report.COULD_NOT_RUN], 2),
        ([report.MISCONFIGURED, report.COULD_NOT_RUN], 1),
        ([report.LEAK, report.OK], 1),
    ],
)
def test_exit_status(verdicts: list[str], code: int) -> None:
    steps = [Step(f"s{i}", v) for i, v in enumerate(verdicts)]
    assert report.overall(steps)[1] == code
    assert report.as_json(steps)["exit_status"] == code
    assert "WebRTC" in report.as_text(steps)


def test_resolved_link_servers_for_the_startup_warning() -> None:
    text = (
        "Global: 127.0.0.1\nLink 2 (eth0): 192.168.1.1 fd00:1::1%2 fe80::1#dns.lan\nLink 1 (lo):\n"
    )
    assert systemcheck.resolved_link_servers(text) == [
        ("eth0", "192.168.1.1"),
        ("eth0", "fd00:1::1"),
        ("eth0", "fe80::1"),
    ]
