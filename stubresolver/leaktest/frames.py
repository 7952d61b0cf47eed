"""Pure: what a captured frame says, if it is DNS-like traffic (RFC 1035 4.2: port 53 over
UDP and TCP; RFC 7858: DNS over TLS on 853; RFC 8484: DoH, which is HTTPS on 443 and is
recognised here only by a known DoH provider's address)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.rdatatype

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE  # tun devices (WireGuard, OpenVPN tun): the frame is the IP packet
PROTO_TCP = 6
PROTO_UDP = 17
DNS_PORTS = frozenset((53, 853))

#: Well-known public DoH/DoT resolvers: HTTPS to them is encrypted DNS that bypasses the
#: stub (Google, Cloudflare, Quad9, OpenDNS, AdGuard, NextDNS anycast).
DOH_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "149.112.112.112",
        "208.67.222.222", "208.67.220.220", "94.140.14.14", "94.140.15.15", "45.90.28.0",
        "2001:4860:4860::8888", "2001:4860:4860::8844", "2606:4700:4700::1111",
        "2606:4700:4700::1001", "2620:fe::fe", "2620:fe::9", "2620:119:35::35",
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Seen:
    """One DNS-like packet on an interface."""

    interface: str
    proto: str  # "udp" / "tcp"
    src: str
    sport: int
    dst: str
    dport: int
    qname: str | None = None  # the question, when the payload is readable plain DNS
    qtype: str | None = None  # its type (glibc asks A and AAAA of a name at once)

    @property
    def kind(self) -> str:
        if self.dport == 53:
            return "DNS"
        if self.dport == 853:
            return "DNS over TLS/QUIC"
        return "DoH (HTTPS to a public DNS resolver)"

    def describe(self) -> str:
        what = f" asking {self.qname} {self.qtype}" if self.qname else ""
        return (
            f"{self.kind} on {self.interface}: {self.proto} {_host(self.src)}:{self.sport} -> "
            f"{_host(self.dst)}:{self.dport}{what}"
        )


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def parse_frame(frame: bytes, interface: str, hatype: int) -> Seen | None:
    """The DNS-like packet in ``frame`` as captured on ``interface``, or None."""
    if hatype == ARPHRD_NONE:
        if not frame:
            return None
        version = frame[0] >> 4
        ethertype = ETH_P_IP if version == 4 else ETH_P_IPV6 if version == 6 else 0
        offset = 0
    else:
        if len(frame) < 14:
            return None
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        offset = 14
        if ethertype == ETH_P_8021Q and len(frame) >= 18:
            ethertype = struct.unpack_from("!H", frame, 16)[0]
            offset = 18
    if ethertype == ETH_P_IP:
        return _ipv4(frame, offset, interface)
    if ethertype == ETH_P_IPV6:
        return _ipv6(frame, offset, interface)
    return None


def _ipv4(frame: bytes, at: int, interface: str) -> Seen | None:
    if len(frame) < at + 20 or frame[at] >> 4 != 4:
        return None
    ihl = (frame[at] & 0x0F) * 4
    if struct.unpack_from("!H", frame, at + 6)[0] & 0x1FFF:
        return None  # a later fragment: no transport header
    proto = frame[at + 9]
    src = str(ipaddress.IPv4Address(frame[at + 12 : at + 16]))
    dst = str(ipaddress.IPv4Address(frame[at + 16 : at + 20]))
    return _transport(frame, at + ihl, proto, src, dst, interface)


def _ipv6(frame: bytes, at: int, interface: str) -> Seen | None:
    if len(frame) < at + 40 or frame[at] >> 4 != 6:
        return None
    proto = frame[at + 6]  # extension headers are not followed: DNS packets rarely carry them
    src = str(ipaddress.IPv6Address(frame[at + 8 : at + 24]))
    dst = str(ipaddress.IPv6Address(frame[at + 24 : at + 40]))
    return _transport(frame, at + 40, proto, src, dst, interface)


def _transport(
    frame: bytes, at: int, proto: int, src: str, dst: str, interface: str
) -> Seen | None:
    if proto not in (PROTO_UDP, PROTO_TCP) or len(frame) < at + 8:
        return None
    sport, dport = struct.unpack_from("!HH", frame, at)
    if dport not in DNS_PORTS and not (dport == 443 and ipaddress.ip_address(dst) in DOH_ADDRESSES):
        return None
    if proto == PROTO_UDP:
        payload = frame[at + 8 :]
        name = "udp"
    else:
        if len(frame) < at + 20:
            return None
        payload = frame[at + (frame[at + 12] >> 4) * 4 :]
        payload = payload[2:]  # RFC 1035 4.2.2: a two-byte length before each message
        name = "tcp"
    qname, qtype = _question(payload) if dport == 53 else (None, None)
    return Seen(interface, name, src, sport, dst, dport, qname, qtype)


def _question(payload: bytes) -> tuple[str | None, str | None]:
    if len(payload) < 12:
        return None, None
    try:
        message = dns.message.from_wire(payload, question_only=True)
    except (dns.exception.DNSException, ValueError):
        return None, None
    if not message.question:
        return None, None
    rrset = message.question[0]
    return str(rrset.name).lower(), dns.rdatatype.to_text(rrset.rdtype)
