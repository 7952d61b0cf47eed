"""wire: query checks, synthetic responses, TTL walk and patching, truncation, ECS, framing."""

from __future__ import annotations

import contextlib
import random
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from stubresolver import wire
from stubresolver.errors import WireError

MALFORMED = Path(__file__).resolve().parents[1] / "data" / "malformed"


def make_query(name: str = "www.example.", rdtype: str = "A", **kwargs: object) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    msg.id = 0x4242
    return msg.to_wire()


def header(flags: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0xBEEF, flags, qd, an, ns, ar)


QUESTION = b"\x03www\x07example\x00\x00\x01\x00\x01"
OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
# RDLEN 6, holding an option that claims 0x20 octets of data (4 + 32 > 6).
OPT_OVERRUN = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x06\x00\x08\x00\x20\x00\x01"
OPT_HALF_OPTION = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x02\x00\x08"
A_RECORD = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"


# --- parse_query ---------------------------------------------------------------------------


def test_plain_query_is_read() -> None:
    query = wire.parse_query(make_query())
    assert query.msg_id == 0x4242
    assert query.qtype == dns.rdatatype.A
    assert query.qclass == 1
    assert not query.has_edns
    assert query.udp_size == 512
    assert not query.do
    assert query.rd


def test_edns_do_cd_and_case() -> None:
    data = make_query("WwW.ExAmPlE.", use_edns=0, payload=1400, want_dnssec=True)
    msg = dns.message.from_wire(data)
    msg.flags |= dns.flags.CD
    query = wire.parse_query(msg.to_wire())
    assert query.has_edns and query.do and query.cd
    assert query.udp_size == 1400
    assert query.qname == b"\x03WwW\x07ExAmPlE\x00"
    assert query.qname_lower == b"\x03www\x07example\x00"
    plain = wire.parse_query(make_query("www.example."))
    assert query.cache_key() != plain.cache_key()  # DO/CD/EDNS are part of the key
    assert query.question_key() == plain.question_key()


def test_small_edns_payload_is_raised_to_512() -> None:
    assert wire.parse_query(make_query(use_edns=0, payload=100)).udp_size == 512


def test_ecs_option_is_seen() -> None:
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    query = wire.parse_query(make_query(use_edns=0, options=[ecs]))
    assert query.has_ecs


@pytest.mark.parametrize(
    ("data", "rcode"),
    [
        (b"", None),
        (b"\x12\x34\x01", None),
        (header(0x8000) + QUESTION, None),  # QR=1
        (header(0x2800) + QUESTION, wire.NOTIMP),  # UPDATE
        (header(0x2000) + QUESTION, wire.NOTIMP),  # NOTIFY
        (header(0x0100, qd=0), wire.FORMERR),
        (header(0x0100, qd=2) + QUESTION + QUESTION, wire.FORMERR),
        (header(0x0100) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", wire.FORMERR),
        (header(0x0100) + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", wire.FORMERR),
        (header(0x0100) + b"\xc0\x0c\x00\x01\x00\x01", wire.FORMERR),
        (header(0x0100) + b"\x03www\x07exa", wire.FORMERR),
        (header(0x0100) + b"\x03www\x00\x00", wire.FORMERR),
        (header(0x0100, ar=1) + QUESTION + b"\x00\x00\x29\x10", wire.FORMERR),
        # Malformed but parsable (issue 7): each is FORMERR for itself, never forwarded.
        (header(0x0100) + QUESTION + b"\x00", wire.FORMERR),  # trailing byte
        (header(0x0100, ar=1) + QUESTION + OPT + b"junk", wire.FORMERR),  # after the OPT
        (header(0x0100, ar=1) + QUESTION + OPT_OVERRUN, wire.FORMERR),  # option past RDATA
        (header(0x0100, ar=1) + QUESTION + OPT_HALF_OPTION, wire.FORMERR),  # 2 of 4 octets
        (header(0x0100, an=1) + QUESTION + A_RECORD, wire.FORMERR),  # an answer in a query
        (header(0x0100, ns=1) + QUESTION + A_RECORD, wire.FORMERR),  # authority in a query
    ],
)
def test_bad_queries(data: bytes, rcode: int | None) -> None:
    with pytest.raises(WireError) as info:
        wire.parse_query(data)
    assert info.value.rcode == rcode


def test_two_opt_records_is_formerr() -> None:
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    with pytest.raises(WireError) as info:
        wire.parse_query(header(0x0100, ar=2) + QUESTION + opt + opt)
    assert info.value.rcode == wire.FORMERR


def test_edns_version_1_is_badvers_with_opt() -> None:
    data = make_query(use_edns=1)
    with pytest.raises(WireError) as info:
        wire.parse_query(data)
    assert info.value.rcode == wire.BADVERS
    reply = wire.error_response(data, info.value)
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.BADVERS
    assert msg.id == 0x4242
    assert msg.edns == 0


def test_error_response_echoes_id_and_question_when_readable() -> None:
    data = header(0x2900) + QUESTION  # UPDATE with RD
    with pytest.raises(WireError) as info:
        wire.parse_query(data)
    reply = wire.error_response(data, info.value)
    assert reply is not None
    # dnspython reads UPDATE sections differently, so check the bytes: ID, QR, opcode and
    # RD echoed, NOTIMP, and the question copied.
    msg_id, flags, qdcount = struct.unpack_from("!HHH", reply)
    assert msg_id == 0xBEEF
    assert flags & 0x8000
    assert (flags >> 11) & 0xF == 5
    assert flags & 0x0100
    assert flags & 0x000F == wire.NOTIMP
    assert qdcount == 1
    assert reply[wire.HEADER_LEN :] == QUESTION


def test_error_response_without_question_is_header_only() -> None:
    data = header(0x0100, qd=2) + QUESTION + QUESTION
    with pytest.raises(WireError) as info:
        wire.parse_query(data)
    reply = wire.error_response(data, info.value)
    assert reply is not None
    assert len(reply) == wire.HEADER_LEN
    assert reply[3] & 0x0F == wire.FORMERR


def test_dropped_packets_have_no_response() -> None:
    assert wire.error_response(b"\x01", WireError(None, "short")) is None
    assert wire.error_response(header(0x8000) + QUESTION, WireError(None, "qr")) is None


def _malformed_files() -> list[Path]:
    return sorted(MALFORMED.glob("*.bin"))


@pytest.mark.parametrize("path", _malformed_files(), ids=lambda p: p.name)
def test_malformed_corpus_never_raises_anything_else(path: Path) -> None:
    data = path.read_bytes()
    try:
        wire.parse_query(data)
    except WireError as exc:
        wire.error_response(data, exc)


def test_corpus_is_present() -> None:
    assert len(_malformed_files()) >= 10


def test_random_mutations_only_ever_give_query_or_wireerror() -> None:
    rng = random.Random(20261125)
    seeds = [
        make_query(),
        make_query("a.b.c.example.", "TXT", use_edns=0, want_dnssec=True),
        make_query(use_edns=0, options=[dns.edns.ECSOption("192.0.2.0", 24)]),
    ]
    for _ in range(5000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 5)):
            action = rng.randrange(3)
            if action == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif action == 1:
                del data[rng.randrange(len(data) + 1) :]
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        raw = bytes(data)
        try:
            query = wire.parse_query(raw)
        except WireError as exc:
            wire.error_response(raw, exc)
            continue
        # A query that parses must also survive the cold paths that use it.
        wire.build_response(query, raw, wire.REFUSED, ede=(23, "tunnel wg0 down"))
        wire.strip_ecs(raw, query)


# --- responses -----------------------------------------------------------------------------


def test_refused_with_ede() -> None:
    data = make_query(use_edns=0)
    query = wire.parse_query(data)
    reply = wire.build_response(query, data, wire.REFUSED, ede=(23, "tunnel wg0 down"))
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.REFUSED
    assert msg.id == 0x4242
    (ede,) = [o for o in msg.options if o.otype == dns.edns.EDE]
    assert isinstance(ede, dns.edns.EDEOption)
    assert ede.code == 23
    assert ede.text == "tunnel wg0 down"


def test_no_opt_when_client_sent_none() -> None:
    data = make_query()
    query = wire.parse_query(data)
    msg = dns.message.from_wire(wire.build_response(query, data, wire.REFUSED, ede=(23, "x")))
    assert msg.edns == -1
    assert msg.rcode() == dns.rcode.REFUSED


def test_answer_records_with_question_pointer() -> None:
    data = make_query("localhost.", "A")
    query = wire.parse_query(data)
    answer = wire.rr(wire.QUESTION_POINTER, wire.TYPE_A, 0, bytes([127, 0, 0, 1]))
    msg = dns.message.from_wire(
        wire.build_response(query, data, wire.NOERROR, answers=answer, ancount=1, aa=True)
    )
    assert [r.to_text() for r in msg.answer[0]] == ["127.0.0.1"]
    assert msg.flags & dns.flags.AA


def test_encode_decode_name() -> None:
    assert wire.encode_name("www.Example.") == b"\x03www\x07Example\x00"
    assert wire.decode_name(b"\x03www\x07Example\x00") == "www.example."
    assert wire.encode_name(".") == b"\x00"


# --- scan / patch / truncate ----------------------------------------------------------------


def response_for(
    data: bytes, *answers: tuple[str, int, str, str], authority: tuple[str, ...] = ()
) -> bytes:
    query = dns.message.from_wire(data)
    msg = dns.message.make_response(query, our_payload=4096)
    for name, ttl, rdtype, text in answers:
        msg.answer.append(dns.rrset.from_text(name, ttl, "IN", rdtype, text))
    for text in authority:
        owner, ttl_text, soa_type, rdata = text.split(" ", 3)
        msg.authority.append(dns.rrset.from_text(owner, int(ttl_text), "IN", soa_type, rdata))
    return msg.to_wire(max_size=65535)


def test_scan_positive_answer_finds_every_ttl() -> None:
    data = make_query("www.example.", use_edns=0)
    resp = response_for(
        data,
        ("www.example.", 300, "CNAME", "web.example."),
        ("web.example.", 60, "A", "192.0.2.1"),
    )
    info = wire.scan_response(resp)
    assert info.rcode == wire.NOERROR
    assert info.ttl == 60
    assert len(info.ttl_offsets) == 2  # the OPT record's TTL field is not a TTL
    assert not info.negative
    aged = dns.message.from_wire(
        wire.patch_response(resp, 7, b"\x03WWW\x07example\x00", info.ttl_offsets, 50)
    )
    assert aged.id == 7
    assert str(aged.question[0].name) == "WWW.example."
    assert sorted(rrset.ttl for rrset in aged.answer) == [10, 250]


def test_patch_floors_at_zero() -> None:
    data = make_query()
    resp = response_for(data, ("www.example.", 30, "A", "192.0.2.1"))
    info = wire.scan_response(resp)
    msg = dns.message.from_wire(
        wire.patch_response(resp, 1, b"\x03www\x07example\x00", info.ttl_offsets, 99)
    )
    assert msg.answer[0].ttl == 0


def test_negative_ttl_from_soa_rfc2308() -> None:
    data = make_query("nope.example.")
    soa = "example. 900 SOA ns.example. host.example. 1 3600 600 86400 120"
    query = dns.message.from_wire(data)
    msg = dns.message.make_response(query)
    msg.set_rcode(dns.rcode.NXDOMAIN)
    name, ttl, rdtype, rdata = soa.split(" ", 3)
    msg.authority.append(dns.rrset.from_text(name, int(ttl), "IN", rdtype, rdata))
    info = wire.scan_response(msg.to_wire())
    assert info.negative
    assert info.ttl == 120  # min(SOA TTL 900, MINIMUM 120)
    nodata = response_for(data, authority=(soa.replace(" 120", " 1200"),))
    info = wire.scan_response(nodata)
    assert info.negative and info.rcode == wire.NOERROR
    assert info.ttl == 900
    assert wire.scan_response(nodata, negative_max_ttl=60).ttl == 60


def test_negative_without_soa_is_not_cacheable() -> None:
    msg = dns.message.make_response(dns.message.from_wire(make_query()))
    msg.set_rcode(dns.rcode.NXDOMAIN)
    assert wire.scan_response(msg.to_wire()).ttl == 0


def test_truncate_keeps_question_and_opt() -> None:
    data = make_query("big.example.", "TXT", use_edns=0)
    answers = [("big.example.", 300, "TXT", f'"{i:02d}{"x" * 90}"') for i in range(12)]
    resp = response_for(data, *answers)
    assert len(resp) > 512
    cut = wire.truncate(resp, 512)
    assert len(cut) <= 512
    msg = dns.message.from_wire(cut)
    assert msg.flags & dns.flags.TC
    assert not msg.answer
    assert str(msg.question[0].name) == "big.example."
    assert msg.edns == 0
    small = response_for(make_query(), ("www.example.", 1, "A", "192.0.2.1"))
    assert wire.truncate(small, 512) is small


def test_strip_ecs_keeps_other_options_and_do() -> None:
    cookie = dns.edns.CookieOption(b"\x01" * 8, b"")
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    data = make_query(use_edns=0, want_dnssec=True, options=[ecs, cookie])
    stripped = wire.strip_ecs(data, wire.parse_query(data))
    msg = dns.message.from_wire(stripped)
    assert [o.otype for o in msg.options] == [dns.edns.COOKIE]
    assert msg.ednsflags & dns.flags.DO
    assert not wire.parse_query(stripped).has_ecs
    plain = make_query()
    assert wire.strip_ecs(plain, wire.parse_query(plain)) is plain


def test_question_key_and_ids() -> None:
    data = make_query("WWW.example.")
    assert wire.question_key(data) == b"\x03www\x07example\x00\x00\x01\x00\x01"
    assert wire.get_id(wire.with_id(data, 0x1111)) == 0x1111
    with pytest.raises(WireError):
        wire.question_key(data[:14])


# --- TCP framing ---------------------------------------------------------------------------


def test_deframer_survives_every_split_point() -> None:
    messages = [make_query("a.example."), make_query("bb.example.", "AAAA"), b"\x00" * 12]
    stream = b"".join(wire.tcp_frame(m) for m in messages)
    for cut in range(len(stream) + 1):
        deframer = wire.TcpDeframer()
        got = deframer.feed(stream[:cut]) + deframer.feed(stream[cut:])
        assert got == messages, cut
        assert deframer.pending == 0
    deframer = wire.TcpDeframer()
    got = []
    for byte in stream:
        got += deframer.feed(bytes([byte]))
    assert got == messages


# --- limits and edge cases found in review -------------------------------------------------


def _name_of(octets: int) -> bytes:
    """A wire-form name exactly ``octets`` long, root label included (RFC 1035 3.1)."""
    labels = b""
    left = octets - 1
    while left:
        size = min(63, left - 1)
        labels += bytes([size]) + b"a" * size
        left -= size + 1
    return labels + b"\x00"


def test_name_limit_counts_the_root_octet() -> None:
    # RFC 1035 2.3.4 / 3.1: 255 octets or less, counting every length octet and the root's.
    ok = header(0x0100) + _name_of(255) + b"\x00\x01\x00\x01"
    assert len(wire.parse_query(ok).qname) == 255
    dns.message.from_wire(ok)  # dnspython agrees it is legal
    too_long = header(0x0100) + _name_of(256) + b"\x00\x01\x00\x01"
    with pytest.raises(WireError) as info:
        wire.parse_query(too_long)
    assert info.value.rcode == wire.FORMERR


def test_label_of_63_is_accepted() -> None:
    data = make_query("a" * 63 + ".example.")
    assert wire.parse_query(data).qname[0] == 63


def test_notify_and_formerr_error_responses_parse() -> None:
    notify = dns.message.make_query("www.example.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    notify.id = 0x1234
    data = notify.to_wire()
    with pytest.raises(WireError) as info:
        wire.parse_query(data)
    reply = wire.error_response(data, info.value)
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == 0x1234
    assert msg.rcode() == dns.rcode.NOTIMP
    assert msg.opcode() == dns.opcode.NOTIFY
    assert str(msg.question[0].name) == "www.example."
    bad_label = header(0x0100) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"
    with pytest.raises(WireError) as info:
        wire.parse_query(bad_label)
    reply = wire.error_response(bad_label, info.value)
    assert reply is not None
    msg = dns.message.from_wire(reply)  # header only: the question could not be read
    assert msg.id == 0xBEEF
    assert msg.rcode() == dns.rcode.FORMERR
    assert not msg.question


def test_truncate_stays_well_formed_when_the_opt_alone_is_too_big() -> None:
    # An upstream's OPT may carry large options (RFC 7830 padding, EDE text); without room
    # for it the result must still be a parseable message with TC set and the question.
    data = make_query("big.example.", "TXT", use_edns=0)
    msg = dns.message.make_response(dns.message.from_wire(data))
    msg.use_edns(
        0, payload=4096, options=[dns.edns.GenericOption(dns.edns.OptionType.PADDING, bytes(600))]
    )
    msg.answer.append(dns.rrset.from_text("big.example.", 300, "IN", "TXT", '"' + "x" * 200 + '"'))
    resp = msg.to_wire()
    cut = wire.truncate(resp, 512)
    assert len(cut) <= 512
    parsed = dns.message.from_wire(cut)
    assert parsed.flags & dns.flags.TC
    assert parsed.id == 0x4242
    assert str(parsed.question[0].name) == "big.example."
    assert not parsed.answer


def test_scan_walks_compressed_names_in_every_section() -> None:
    data = make_query("www.example.", use_edns=0)
    query = dns.message.from_wire(data)
    msg = dns.message.make_response(query)
    msg.answer.append(dns.rrset.from_text("www.example.", 300, "IN", "CNAME", "a.www.example."))
    msg.answer.append(dns.rrset.from_text("a.www.example.", 200, "IN", "A", "192.0.2.7"))
    msg.authority.append(dns.rrset.from_text("example.", 100, "IN", "NS", "ns.example."))
    msg.additional.append(dns.rrset.from_text("ns.example.", 50, "IN", "A", "192.0.2.53"))
    resp = msg.to_wire()
    assert resp.count(b"\xc0") >= 4  # dnspython compressed the owners and targets
    info = wire.scan_response(resp)
    assert info.ttl == 200  # the answer section's minimum
    assert len(info.ttl_offsets) == 4
    aged = dns.message.from_wire(
        wire.patch_response(resp, 9, b"\x03wWw\x07EXAMPLE\x00", info.ttl_offsets, 60)
    )
    ttls = [r.ttl for section in (aged.answer, aged.authority, aged.additional) for r in section]
    assert ttls == [240, 140, 40, 0]
    assert str(aged.question[0].name) == "wWw.EXAMPLE."


def test_truncate_of_a_broken_oversized_response_still_answers() -> None:
    # Upstreams only check the question, and the UDP reply path truncates unguarded.
    data = make_query("big.example.", "TXT", use_edns=0)
    msg = dns.message.make_response(dns.message.from_wire(data))
    texts = [f'"{i}{"x" * 100}"' for i in range(6)]
    msg.answer.append(dns.rrset.from_text("big.example.", 300, "IN", "TXT", *texts))
    broken = bytearray(msg.to_wire())
    struct.pack_into("!H", broken, 6, 50)  # ANCOUNT 50: the records run past the end
    cut = wire.truncate(bytes(broken), 512)
    parsed = dns.message.from_wire(cut)
    assert parsed.flags & dns.flags.TC
    assert str(parsed.question[0].name) == "big.example."


def test_mutated_responses_only_ever_give_wireerror_on_the_cold_paths() -> None:
    # Upstream answers are checked only for ID and question before the cache walks them.
    from stubresolver.cache import Cache

    rng = random.Random(8914)
    data = make_query("big.example.", "TXT", use_edns=0, want_dnssec=True)
    query = wire.parse_query(data)
    msg = dns.message.make_response(dns.message.from_wire(data))
    msg.answer.append(dns.rrset.from_text("big.example.", 300, "IN", "TXT", '"a"', '"b"'))
    soa = "ns.example. h.example. 1 2 3 4 60"
    msg.authority.append(dns.rrset.from_text("example.", 3600, "IN", "SOA", soa))
    seed = msg.to_wire()
    cache = Cache()
    for _ in range(3000):
        mutated = bytearray(seed)
        for _ in range(rng.randrange(1, 4)):
            if rng.randrange(2) and mutated:
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            else:
                del mutated[rng.randrange(len(mutated) + 1) :]
        raw = bytes(mutated)
        with contextlib.suppress(WireError):
            wire.scan_response(raw)
        cache.store(query, raw, 0.0)  # False for what it cannot walk, never an exception
        hit = cache.lookup(query, 1.0)
        if hit is not None:
            assert wire.get_id(hit) == 0x4242


def test_has_question_agrees_with_question_key() -> None:
    rng = random.Random(4343)
    for _ in range(500):
        labels = [
            "".join(rng.choice("aAbBzZ09-_") for _ in range(rng.randrange(1, 8)))
            for _ in range(rng.randrange(1, 4))
        ]
        name = ".".join(labels) + "."
        rdtype = rng.choice(["A", "AAAA", "HTTPS", "TXT", "SVCB", "CAA"])  # HTTPS = 65 = "A"
        data = make_query(name, rdtype)
        key = wire.question_key(data)
        swapped = data[:12] + data[12:-4].swapcase() + data[-4:]
        assert wire.has_question(swapped, key)
        other = make_query(name, "MX" if rdtype != "MX" else "A")
        assert not wire.has_question(other, key)
        longer = make_query("x" + name, rdtype)
        assert not wire.has_question(longer, key)
    no_question = bytearray(make_query())
    no_question[5] = 0
    assert not wire.has_question(bytes(no_question), wire.question_key(make_query()))
    assert not wire.has_question(b"\x00" * 5, wire.question_key(make_query()))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (b"\x03www\x07Example\x03com\x00", "www.example.com."),
        (b"\x00", "."),
        # A newline in a label would start a forged line in the query log.
        (b"\x0aa\nfake log\x03com\x00", "a\\010fake\\032log.com."),
        (b"\x03a.b\x02c\\\x00", "a\\.b.c\\\\."),
        (b"\x02\x1b[\x00", "\\027[."),
        (b"\x02\xc3\xa9\x00", "\\195\\169."),
    ],
)
def test_decode_name_escapes_what_could_forge_a_log_line(name: bytes, text: str) -> None:
    assert wire.decode_name(name) == text
    assert all(0x21 <= ord(c) <= 0x7E for c in wire.decode_name(name))
