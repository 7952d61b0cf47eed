"""Names that never leave the machine, at any tunnel state (DESIGN.md "policy").

Answered here, before the cache and the gate:
- ``localhost`` and names below it (RFC 6761 6.3): loopback addresses.
- ``invalid.`` (RFC 6761 6.4) and ``local.`` (RFC 6762 3: multicast DNS, never unicast
  upstream): NXDOMAIN.
- ``home.arpa.`` (RFC 8375: home networks), ``internal.`` (ICANN's TLD reserved for private
  use) and ``onion.`` (RFC 7686 2: Tor names must never reach DNS): NXDOMAIN. Asking the
  VPN's resolver about them tells it about the LAN or the Tor site.
- ``resolver.arpa.`` (RFC 9462): NODATA for ``_dns.resolver.arpa``, NXDOMAIN below the rest.
  A DDR answer would point clients at an encrypted resolver of its own choosing, which they
  would then use directly, bypassing the stub and the tunnel.
- Single-label names (``printer``, ``nas``): NXDOMAIN unless ``local.single_label:
  forward``; they come from search lists and LAN habits and name the local network. Types
  that ask about a top-level zone itself (SOA, NS, DS, DNSKEY) still go to the tunnel, so a
  validator or ``dig com NS`` works.
- Canary names, NXDOMAIN for every type: ``use-application-dns.net`` (Firefox: NXDOMAIN
  disables its built-in DoH, which would otherwise bypass the tunnel entirely), and
  ``mask.icloud.com`` / ``mask-h2.icloud.com`` (Apple: NXDOMAIN turns iCloud Private Relay
  off, whose own resolver path would bypass the stub).
- ``policy.block_list``: the listed names and every name below them, NXDOMAIN (public DoH
  providers, so a browser's own DoH fails and it falls back to the system resolver).
- Reverse lookups inside private, loopback, CGNAT and link-local ranges (RFC 6303), the
  documentation ranges (RFC 5737, RFC 3849) and IPv4-mapped IPv6 (RFC 4291 2.5.5.2, which
  spells IPv4 addresses, private ones included): NXDOMAIN, since asking anyone would reveal
  the LAN's addresses - unless the range is configured to go to the VPN (its own address
  space, ``local.reverse_via_vpn``; a listed IPv4 range covers its IPv4-mapped form too).

- ``local.records``: names configured with zone-file records are answered from them (the
  asked type's records; NODATA for another type; a CNAME for any other type, RFC 1034
  3.6.2, not chased), like unbound's local-data. They win over the rules above for their
  own names only; a name between such a record and a zone answered NXDOMAIN here (``lan.``
  of ``printer.lan.`` when single-label names are local) is answered NODATA instead, since
  NXDOMAIN would say nothing exists below it (RFC 8020).

The check runs on every query, so it first compares raw wire suffixes and only decodes the
name when one matches. `LocalPolicy.classify` is the one place these rules live: it names
the rule that takes a query (a `Match`), `LocalPolicy.build` makes that rule's answer, and
`LocalPolicy.answer` (the hot path) is the two in a row. `stubresolver explain` asks
`classify` too, so what it says is what the hot path does.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from stubresolver import wire
from stubresolver.config import LocalRecord

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
        # Documentation ranges: RFC 5737 (IPv4), RFC 3849 (IPv6). Nobody's real addresses.
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
        # RFC 4291 2.5.5.2: IPv4-mapped IPv6, an IPv4 address in IPv6 spelling.
        "::ffff:0:0/96",
    )
)
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_LOCALHOST = b"\x09localhost\x00"
_NXDOMAIN_SUFFIXES = (
    b"\x07invalid\x00",
    b"\x05local\x00",
    b"\x04home\x04arpa\x00",
    b"\x08internal\x00",
    b"\x05onion\x00",
)
_CANARY = b"\x13use-application-dns\x03net\x00"
_ICLOUD = b"\x06icloud\x03com\x00"
_CANARIES = frozenset((_CANARY, b"\x04mask" + _ICLOUD, b"\x07mask-h2" + _ICLOUD))
_RESOLVER_ARPA = b"\x08resolver\x04arpa\x00"
_DDR = b"\x04_dns" + _RESOLVER_ARPA
# Types that ask about a top-level zone itself, not a host on the LAN (RFC 4035 3.1.4: DS
# is answered by the parent; validators ask for DNSKEY, SOA, NS of every zone on a chain).
_ZONE_TYPES = frozenset((wire.TYPE_SOA, wire.TYPE_NS, 43, 48))  # 43 DS, 48 DNSKEY
_IN_ADDR = b"\x07in-addr\x04arpa\x00"
_IP6 = b"\x03ip6\x04arpa\x00"
# Every name handled here ends with one of these (wire form, lower case).
_LOCAL_SUFFIXES = (
    _LOCALHOST, *_NXDOMAIN_SUFFIXES, *_CANARIES, _RESOLVER_ARPA, _IN_ADDR, _IP6
)  # fmt: skip
_LOOPBACK_V4 = bytes([127, 0, 0, 1])
_LOOPBACK_V6 = bytes(15) + b"\x01"
LOCAL_TTL = 0  # synthetic answers are not worth caching downstream


class Rule(enum.Enum):
    """Which local rule answers a query (the names `explain` prints)."""

    RECORDS = "local.records"
    BOOTSTRAP = "bootstrap_hosts"
    SINGLE_LABEL = "single-label"
    BLOCK_LIST = "block-list"
    LOCALHOST = "localhost"
    CANARY = "canary"
    SPECIAL_USE = "special-use"  # invalid, local, home.arpa, internal, onion
    DDR = "resolver.arpa"
    PRIVATE_REVERSE = "private-reverse"

    __hash__ = object.__hash__  # as Outcome: identity hashing, no Python-level hash


class Match(NamedTuple):
    """The rule that answers a query and the wire name it matched on: the record owner,
    the name itself (single label, canary), the listed name (block list) or the zone
    (localhost, special-use, resolver.arpa, the reverse zone). ``network`` is the private
    range of a PRIVATE_REVERSE match. A NamedTuple: made per local answer, and a frozen
    dataclass costs about 0.5 us more to make."""

    rule: Rule
    zone: bytes
    network: IPNetwork | None = None


# The matches of the fixed rules, made once: a local answer allocates no Match for them.
_LOCALHOST_MATCH = Match(Rule.LOCALHOST, _LOCALHOST)
_DDR_MATCH = Match(Rule.DDR, _RESOLVER_ARPA)
_tuple_new = tuple.__new__
# Members as module globals: an Enum member read through its class costs ~100 ns in 3.11.
_RECORDS, _BOOTSTRAP, _LOCALHOST_RULE, _DDR_RULE, _SINGLE_LABEL = (
    Rule.RECORDS, Rule.BOOTSTRAP, Rule.LOCALHOST, Rule.DDR, Rule.SINGLE_LABEL
)  # fmt: skip
_CANARY_MATCHES = {name: Match(Rule.CANARY, name) for name in _CANARIES}
_SPECIAL_USE_MATCHES = tuple((s, Match(Rule.SPECIAL_USE, s)) for s in _NXDOMAIN_SUFFIXES)


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

    __slots__ = (
        "_blocked",
        "_parents",
        "_record_matches",
        "_records",
        "_single_label_nxdomain",
        "_via_vpn",
    )

    def __init__(
        self,
        reverse_via_vpn: Sequence[IPNetwork] = (),
        *,
        single_label_nxdomain: bool = True,
        records: Sequence[LocalRecord] = (),
        bootstrap: Sequence[LocalRecord] = (),
        blocked: frozenset[bytes] = frozenset(),
    ) -> None:
        # Listed name -> its match, made once: a blocked name allocates nothing.
        self._blocked = {name: Match(Rule.BLOCK_LIST, name) for name in blocked}
        by_name: dict[bytes, list[LocalRecord]] = {}
        for record in (*records, *bootstrap):
            by_name.setdefault(record.name, []).append(record)
        # bootstrap_hosts answer exactly like local.records; they are told apart only to
        # name the rule (a name in both is named after local.records).
        bootstrap_only = {r.name for r in bootstrap} - {r.name for r in records}
        self._record_matches = {
            name: Match(Rule.BOOTSTRAP if name in bootstrap_only else Rule.RECORDS, name)
            for name in by_name
        }
        self._records: Mapping[bytes, tuple[LocalRecord, ...]] = {
            name: tuple(found) for name, found in by_name.items()
        }
        # Every name above a record (wire form), for the RFC 8020 rule in the docstring.
        parents: set[bytes] = set()
        for name in self._records:
            pos = name[0] + 1
            while name[pos]:
                parents.add(name[pos:])
                pos += name[pos] + 1
        self._parents = frozenset(parents - self._records.keys())
        via_vpn = list(reverse_via_vpn)
        for net in reverse_via_vpn:
            if isinstance(net, ipaddress.IPv4Network):
                # The same addresses spelled as IPv4-mapped IPv6 go to the VPN too.
                mapped = int(_V4_MAPPED.network_address) + int(net.network_address)
                via_vpn.append(ipaddress.IPv6Network((mapped, 96 + net.prefixlen)))
        self._via_vpn = tuple(via_vpn)
        self._single_label_nxdomain = single_label_nxdomain

    def answer(self, query: wire.Query, data: bytes) -> bytes | None:
        """The local answer for this query, or None when it must go to the tunnel."""
        match = self.classify(query)
        return None if match is None else self.build(match, query, data)

    def classify(self, query: wire.Query) -> Match | None:
        """The rule that answers this query here, or None when it must go to the tunnel.
        Pure: the one statement of the rules, for the hot path and for `explain`."""
        name = query.qname_lower
        if self._records:
            own = self._record_matches.get(name)
            if own is not None and query.qclass == wire.CLASS_IN:
                return own
        if (
            len(name) == name[0] + 2  # one label, then the root
            and name != _LOCALHOST
            and self._single_label_nxdomain
            and query.qtype not in _ZONE_TYPES
        ):
            # tuple.__new__ skips NamedTuple's Python-level __new__ (~0.3 us here).
            return _tuple_new(Match, (_SINGLE_LABEL, name, None))
        if self._blocked:
            listed = self._blocked_by(name)
            if listed is not None:
                return self._blocked[listed]
        if not name.endswith(_LOCAL_SUFFIXES):
            return None  # the common case: one C-level check per query
        if _is_name_or_below(name, _LOCALHOST):
            return _LOCALHOST_MATCH
        canary = _CANARY_MATCHES.get(name)
        if canary is not None:
            return canary
        for suffix, special in _SPECIAL_USE_MATCHES:
            if _is_name_or_below(name, suffix):
                return special
        if _is_name_or_below(name, _RESOLVER_ARPA):
            return _DDR_MATCH
        if name.endswith((_IN_ADDR, _IP6)):
            private = self._private_range(name)
            if private is not None:
                zone = _IN_ADDR if name.endswith(_IN_ADDR) else _IP6
                return Match(Rule.PRIVATE_REVERSE, zone, private)
        return None

    def build(self, match: Match, query: wire.Query, data: bytes) -> bytes:
        """The answer of the rule `classify` found for this query. Pure."""
        rule = match.rule
        if rule is _RECORDS or rule is _BOOTSTRAP:
            return self._from_records(query, data, self._records[match.zone])
        if rule is _LOCALHOST_RULE:
            return self._localhost(query, data)
        if rule is _DDR_RULE and query.qname_lower == _DDR:
            # RFC 9462 4: _dns.resolver.arpa exists for DDR; say it has no data (NODATA) so
            # clients keep using us, and that nothing else exists there.
            return wire.build_response(query, data, wire.NOERROR, aa=True)
        return self._nxdomain(query, data)

    def _blocked_by(self, name: bytes) -> bytes | None:
        """The listed name that is ``name`` or one of its parents (a set lookup per label)."""
        blocked = self._blocked
        pos = 0
        while name[pos]:
            if name[pos:] in blocked:
                return name[pos:]
            pos += name[pos] + 1
        return None

    def _nxdomain(self, query: wire.Query, data: bytes) -> bytes:
        # RFC 8020: NXDOMAIN denies everything below the name; a configured record there
        # makes the name exist (empty non-terminal, RFC 4592 2.2.2): NODATA instead.
        rcode = wire.NOERROR if query.qname_lower in self._parents else wire.NXDOMAIN
        return wire.build_response(query, data, rcode, aa=True)

    @staticmethod
    def _from_records(query: wire.Query, data: bytes, own: tuple[LocalRecord, ...]) -> bytes:
        """The records of the asked type; a CNAME for any other type (RFC 1034 3.6.2: not
        followed, the client asks again); otherwise NODATA."""
        found = [r for r in own if r.rtype == query.qtype]
        if not found:
            found = [r for r in own if r.rtype == wire.TYPE_CNAME]
        answers = b"".join(wire.rr(wire.QUESTION_POINTER, r.rtype, r.ttl, r.rdata) for r in found)
        return wire.build_response(
            query, data, wire.NOERROR, answers=answers, ancount=len(found), aa=True
        )

    def _private_range(self, name: bytes) -> IPNetwork | None:
        """The private range a reverse name sits in, unless it goes to the VPN
        (``local.reverse_via_vpn``); None for a public or unspelled block."""
        net = reverse_network(name)
        if net is None:
            return None
        for private in PRIVATE_RANGES:
            if net.version == private.version and net.subnet_of(private):  # type: ignore[arg-type]
                if any(net.version == vpn.version and net.overlaps(vpn) for vpn in self._via_vpn):
                    return None
                return private
        return None

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
