"""Names that never leave the machine, at any tunnel state (DESIGN.md "policy").

Answered here, before the cache and the gate:
- ``localhost`` and names below it (RFC 6761 6.3): loopback addresses.
- ``invalid.`` (RFC 6761 6.4) and ``local.`` (RFC 6762 3: multicast DNS, never unicast
  upstream): NXDOMAIN.
- ``use-application-dns.net``: NXDOMAIN. Firefox's canary domain; NXDOMAIN disables its
  built-in DoH, which would otherwise bypass the tunnel entirely.
- Reverse lookups inside private, loopback, CGNAT and link-local ranges (RFC 6303): NXDOMAIN,
  since asking anyone would reveal the LAN's addresses - unless the range is configured to go
  to the VPN (its own address space, ``local.reverse_via_vpn``).

The check runs on every query, so it first compares raw wire suffixes and only decodes the
name when one matches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from stubresolver import wire

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6303 4 (locally served zones) plus RFC 6598 shared address space, used by many VPNs.
PRIVATE_RANGES: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "::/128",
        "fc00::/7",
        "fe80::/10",
    )
)

_LOCALHOST = b"\x09localhost\x00"
_NXDOMAIN_SUFFIXES = (b"\x07invalid\x00", b"\x05local\x00")
_CANARY = b"\x13use-application-dns\x03net\x00"
_IN_ADDR = b"\x07in-addr\x04arpa\x00"
_IP6 = b"\x03ip6\x04arpa\x00"
# Every name handled here ends with one of these (wire form, lower case).
_LOCAL_SUFFIXES = (_LOCALHOST, *_NXDOMAIN_SUFFIXES, _CANARY, _IN_ADDR, _IP6)
_LOOPBACK_V4 = bytes([127, 0, 0, 1])
_LOOPBACK_V6 = bytes(15) + b"\x01"
LOCAL_TTL = 0  # synthetic answers are not worth caching downstream


def _is_name_or_below(name: bytes, suffix: bytes) -> bool:
    """True when wire name ``name`` equals ``suffix`` or sits below it, on a label boundary."""
    if name == suffix:
        return True
    if not name.endswith(suffix):
        return False
    # Walk labels from the start to be sure the suffix starts at a label boundary.
    cut = len(name) - len(suffix)
    pos = 0
    while pos < cut:
        pos += name[pos] + 1
    return pos == cut


def reverse_network(name: bytes) -> IPNetwork | None:
    """The address block of the reverse zone a name sits in (in-addr.arpa / ip6.arpa).

    The block is spelled by the address labels next to the suffix; labels further left need
    not be numbers (RFC 6763 11 browse domains like ``b._dns-sd._udp.0.1.168.192.in-addr.arpa``
    live inside the zone too, RFC 6303 3). None when no address label follows the suffix.
    """
    labels: list[bytes] = []
    pos = 0
    while name[pos]:
        labels.append(name[pos + 1 : pos + 1 + name[pos]])
        pos += name[pos] + 1
    spelled = labels[:-2][::-1]  # nearest the suffix first
    if _is_name_or_below(name, _IN_ADDR):
        octets: list[int] = []
        for label in spelled[:4]:
            if not (label.isdigit() and int(label) < 256):
                break
            octets.append(int(label))
        if not octets:
            return None
        values = octets + [0] * (4 - len(octets))
        return ipaddress.IPv4Network((bytes(values), 8 * len(octets)))
    nibbles: list[bytes] = []
    for label in spelled[:32]:
        if not (len(label) == 1 and label in b"0123456789abcdef"):
            break
        nibbles.append(label)
    if not nibbles:
        return None
    hexed = b"".join(nibbles).decode().ljust(32, "0")
    return ipaddress.IPv6Network((bytes.fromhex(hexed), 4 * len(nibbles)))


class LocalPolicy:
    """Decides which queries are answered locally and builds those answers."""

    __slots__ = ("_via_vpn",)

    def __init__(self, reverse_via_vpn: Sequence[IPNetwork] = ()) -> None:
        self._via_vpn = tuple(reverse_via_vpn)

    def answer(self, query: wire.Query, data: bytes) -> bytes | None:
        """The local answer for this query, or None when it must go to the tunnel."""
        name = query.qname_lower
        if not name.endswith(_LOCAL_SUFFIXES):
            return None  # the common case: one C-level check per query
        if _is_name_or_below(name, _LOCALHOST):
            return self._localhost(query, data)
        if name == _CANARY or any(_is_name_or_below(name, s) for s in _NXDOMAIN_SUFFIXES):
            return wire.build_response(query, data, wire.NXDOMAIN, aa=True)
        if (name.endswith((_IN_ADDR, _IP6))) and self._reverse_is_private(name):
            return wire.build_response(query, data, wire.NXDOMAIN, aa=True)
        return None

    def _reverse_is_private(self, name: bytes) -> bool:
        net = reverse_network(name)
        if net is None:
            return False
        for private in PRIVATE_RANGES:
            if net.version == private.version and net.subnet_of(private):  # type: ignore[arg-type]
                return not any(
                    net.version == vpn.version and net.overlaps(vpn) for vpn in self._via_vpn
                )
        return False

    @staticmethod
    def _localhost(query: wire.Query, data: bytes) -> bytes:
        # RFC 6761 6.3: localhost names resolve to loopback; other types have no data.
        if query.qclass == wire.CLASS_IN and query.qtype in (wire.TYPE_A, wire.TYPE_AAAA):
            rdata = _LOOPBACK_V4 if query.qtype == wire.TYPE_A else _LOOPBACK_V6
            answer = wire.rr(wire.QUESTION_POINTER, query.qtype, LOCAL_TTL, rdata)
            return wire.build_response(
                query, data, wire.NOERROR, answers=answer, ancount=1, aa=True
            )
        return wire.build_response(query, data, wire.NOERROR, aa=True)
