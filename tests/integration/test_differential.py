"""Differential test (issue 7): the stub answers every query as the upstream answers it.

A real validating unbound (tests/integration/dnssec_world.py) serves a zone signed at test
time. For every name x query variant x transport the same query goes to the upstream directly
and to the stub (a `stubresolver run` subprocess, tunnel `lo`, upstream that unbound over
plain UDP, then over plain TCP), twice to the stub: cold (its cache flushed), then warm.
The replies must agree on the rcode, the header flags and every section, ignoring TTLs.

Documented exceptions, and only these:
- TC=1 on either side: compare only the rcode and TC (the records of a truncated answer are
  the server's choice).
- The UDP cap (server.udp_max_payload, 1232 here): where we truncate and the upstream, asked
  with the client's own size, did not, compare the rcode only and check the upstream's
  answer is indeed larger than min(client size, cap).
- COOKIE: we never forward the client's cookie (RFC 7873 5.1), so the options are compared
  without COOKIE. ECS is stripped as well, but no variant here sends ECS.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from stubresolver import control
from testkit.ports import free_port
from testkit.unbound import Unbound

from .dnssec_world import ZONE, run_validating_unbound
from .stub_process import StubProcess, run_stub, write_config

STUB_ADDR = "127.0.20.3"
CAP = 1232  # server.udp_max_payload's default (DNS flag day 2020)

NAMES: list[tuple[str, str, str]] = [
    # (label, name, type)
    ("positive", f"www.{ZONE}", "A"),
    ("nxdomain", f"nx.{ZONE}", "A"),
    ("nodata", f"www.{ZONE}", "TXT"),
    ("cname-chain", f"alias.{ZONE}", "A"),
    ("wildcard", f"x.wild.{ZONE}", "A"),
    ("large-txt", f"big.{ZONE}", "TXT"),
    ("many-a", f"many.{ZONE}", "A"),
    ("insecure", f"host.insecure.{ZONE}", "A"),
    ("bogus", f"bogus.{ZONE}", "A"),
]


@dataclass(frozen=True)
class Variant:
    label: str
    edns: int = -1  # -1: no OPT
    payload: int = 1232
    do: bool = False
    flags_on: int = 0
    flags_off: int = 0
    mixed_case: bool = False
    options: tuple[dns.edns.Option, ...] = ()


COOKIE = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01\x02\x03\x04\x05\x06\x07\x08")
UNKNOWN = dns.edns.GenericOption("65001", b"differential")  # an unassigned code

VARIANTS = [
    Variant("no-edns"),
    Variant("edns-512", edns=0, payload=512),
    Variant("edns-1232", edns=0, payload=1232),
    Variant("edns-4096", edns=0, payload=4096),
    Variant("do", edns=0, payload=1232, do=True),
    Variant("do-4096", edns=0, payload=4096, do=True),
    Variant("cd", edns=0, do=True, flags_on=dns.flags.CD),
    Variant("cd-no-edns", flags_on=dns.flags.CD),
    Variant("ad", flags_on=dns.flags.AD),
    Variant("ad-edns", edns=0, flags_on=dns.flags.AD),
    Variant("rd-0", edns=0, flags_off=dns.flags.RD),
    Variant("mixed-case", edns=0, mixed_case=True),
    Variant("unknown-option", edns=0, options=(UNKNOWN,)),
    Variant("cookie", edns=0, options=(COOKIE,)),
]


def make(name: str, rdtype: str, variant: Variant) -> dns.message.Message:
    if variant.mixed_case:
        name = "".join(c.upper() if i % 2 else c for i, c in enumerate(name))
    msg = dns.message.make_query(
        name,
        rdtype,
        use_edns=variant.edns,
        payload=variant.payload,
        want_dnssec=variant.do,
        options=list(variant.options) or None,
    )
    msg.flags = (msg.flags | variant.flags_on) & ~variant.flags_off
    return msg


def udp_size(variant: Variant) -> int:
    return 512 if variant.edns < 0 else max(512, variant.payload)


def ask(
    msg: dns.message.Message, host: str, port: int, tcp: bool
) -> tuple[dns.message.Message, int]:
    """The reply and its size on the wire; never retries over TCP (we compare TC)."""
    if tcp:
        reply = dns.query.tcp(msg, host, port=port, timeout=5)
        return reply, len(reply.to_wire())
    data = msg.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(data, (host, port))
        raw = sock.recv(65535)
    return dns.message.from_wire(raw, ignore_trailing=True), len(raw)


def opt_view(msg: dns.message.Message) -> object:
    """The OPT record's meaning: version, DO, our payload, options without COOKIE."""
    if msg.edns < 0:
        return None
    options = sorted(
        (int(o.otype), o.to_wire()) for o in msg.options if o.otype != dns.edns.OptionType.COOKIE
    )
    return (msg.edns, msg.ednsflags & dns.flags.DO, msg.payload, options)


def section_view(section: list[Any]) -> list[str]:
    """Each RRset as text with TTLs zeroed, sorted (RRset order is not significant)."""
    out = []
    for rrset in section:
        copy = rrset.copy()
        copy.ttl = 0
        out.append("\n".join(sorted(copy.to_text().lower().splitlines())))
    return sorted(out)


def view(msg: dns.message.Message) -> dict[str, object]:
    return {
        "rcode": msg.rcode(),
        "flags": dns.flags.to_text(msg.flags),
        "question": [q.to_text() for q in msg.question],  # the client's case, both sides
        "answer": section_view(msg.answer),
        "authority": section_view(msg.authority),
        "additional": section_view(msg.additional),
        "opt": opt_view(msg),
    }


@dataclass
class Tally:
    comparisons: int = 0
    mismatches: list[str] | None = None

    def __post_init__(self) -> None:
        self.mismatches = []


def compare(
    tally: Tally,
    label: str,
    ours: tuple[dns.message.Message, int],
    theirs: tuple[dns.message.Message, int],
    limit: int | None,
) -> None:
    """One comparison: ``limit`` is the UDP size we may use (None over TCP)."""
    assert tally.mismatches is not None
    tally.comparisons += 1
    mine, _ = ours
    upstream, upstream_size = theirs
    mine_tc = bool(mine.flags & dns.flags.TC)
    their_tc = bool(upstream.flags & dns.flags.TC)
    if mine_tc and not their_tc and limit is not None:
        # The UDP cap: we truncate at min(client size, cap) where the upstream, asked with
        # the client's own size, did not; then only the rcode is compared.
        if upstream_size <= limit:
            tally.mismatches.append(f"{label}: TC=1 but the answer ({upstream_size}) fits {limit}")
        elif mine.rcode() != upstream.rcode():
            tally.mismatches.append(f"{label}: rcode {mine.rcode()} != {upstream.rcode()}")
        return
    if mine_tc or their_tc:
        got: object = (mine.rcode(), mine_tc)
        want: object = (upstream.rcode(), their_tc)
    else:
        got, want = view(mine), view(upstream)
    if got != want:
        tally.mismatches.append(f"{label}:\n  stub     {got}\n  upstream {want}")


@pytest.fixture(scope="module")
def validating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    with run_validating_unbound(tmp_path_factory.mktemp("dnssec")) as unbound:
        yield unbound


@pytest.fixture(scope="module", params=["udp", "tcp"])
def world(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    validating: Unbound,
) -> Iterator[tuple[Unbound, StubProcess]]:
    """The stub forwarding to the validating unbound over plain UDP, then over plain TCP."""
    unbound = validating
    tmp = tmp_path_factory.mktemp("stub")
    port = free_port(STUB_ADDR)
    config: dict[str, Any] = {
        "listen": [f"{STUB_ADDR}:{port}"],
        "tunnel": {"interfaces": ["lo"]},
        "upstreams": [f"{request.param}://{unbound.addr}:{unbound.port}"],
        "control_socket": str(tmp / "control.sock"),
        "logging": {"level": "debug"},
    }
    with run_stub(write_config(tmp / "config.yaml", config), STUB_ADDR, port) as stub:
        yield unbound, stub
    assert "Traceback" not in stub.stderr


def test_validation_really_happens(validating: Unbound) -> None:
    """The upstream validates: AD on a secure name, SERVFAIL on the bad signature, data
    with CD=1, no AD on the unsigned delegation. Else the comparison proves little."""
    unbound = validating
    secure, _ = ask(
        make(f"www.{ZONE}", "A", Variant("do", 0, do=True)), unbound.addr, unbound.port, False
    )
    assert secure.rcode() == dns.rcode.NOERROR and secure.flags & dns.flags.AD
    bogus, _ = ask(make(f"bogus.{ZONE}", "A", Variant("e", 0)), unbound.addr, unbound.port, False)
    assert bogus.rcode() == dns.rcode.SERVFAIL
    checking_off = make(f"bogus.{ZONE}", "A", Variant("cd", 0, flags_on=dns.flags.CD))
    unchecked, _ = ask(checking_off, unbound.addr, unbound.port, False)
    assert unchecked.rcode() == dns.rcode.NOERROR and unchecked.answer
    insecure, _ = ask(
        make(f"host.insecure.{ZONE}", "A", Variant("do", 0, do=True)),
        unbound.addr,
        unbound.port,
        False,
    )
    assert insecure.rcode() == dns.rcode.NOERROR and not insecure.flags & dns.flags.AD


def test_the_stub_answers_as_the_upstream(world: tuple[Unbound, StubProcess]) -> None:
    unbound, stub = world
    tally = Tally()
    for tcp in (False, True):
        for name, qname, rdtype in NAMES:
            # Cold: the stub's cache is flushed before each name, on each transport, so the
            # first ask of every cache key is forwarded; a later variant that shares an
            # earlier one's key (mixed case, an unknown option, a cookie) is answered from
            # that entry, which is where a key missing a bit (AD, RD) shows. Warm: every
            # variant again, all from the cache.
            assert control.request(stub.config.parent / "control.sock", "flush")["ok"]
            for temperature in ("cold", "warm"):
                for variant in VARIANTS:
                    msg = make(qname, rdtype, variant)
                    limit = None if tcp else min(udp_size(variant), CAP)
                    transport = "tcp" if tcp else "udp"
                    ours = ask(msg, stub.host, stub.port, tcp)
                    theirs = ask(msg, unbound.addr, unbound.port, tcp)
                    label = f"{name}/{variant.label}/{transport}/{temperature}"
                    compare(tally, label, ours, theirs, limit)
    # Opcodes we do not implement: NOTIMP as unbound answers (issue 7).
    for variant in (VARIANTS[0], VARIANTS[2], VARIANTS[4]):
        msg = make(f"www.{ZONE}", "A", variant)
        msg.set_opcode(dns.opcode.STATUS)
        for tcp in (False, True):
            ours = ask(msg, stub.host, stub.port, tcp)
            theirs = ask(msg, unbound.addr, unbound.port, tcp)
            compare(tally, f"opcode-status/{variant.label}/{tcp}", ours, theirs, None)
    assert tally.mismatches is not None
    print(f"differential: {tally.comparisons} comparisons, {len(tally.mismatches)} mismatches")
    assert not tally.mismatches, "\n".join(tally.mismatches[:40])
