"""RFC 8467 block-length padding of queries (RFC 7830 option), and removing an OPT we
added from the answer (RFC 6891 7)."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rrset
import dns.tsigkeyring
import pytest

from stubresolver.errors import WireError
from stubresolver.padding import BLOCK_LENGTH, pad_query, strip_opt


def padding_len(msg: dns.message.Message) -> int | None:
    for opt in msg.options:
        if opt.otype == dns.edns.OptionType.PADDING:
            return len(opt.to_wire())
    return None


@pytest.mark.parametrize("label_len", [1, 5, 30, 63])
@pytest.mark.parametrize("edns", [False, True])
def test_padded_to_a_block_multiple(label_len: int, edns: bool) -> None:
    name = ("x" * label_len) + ".example."
    q = dns.message.make_query(name, "AAAA", use_edns=0 if edns else False)
    q.id = 4242
    padded, added = pad_query(q.to_wire())
    assert len(padded) % BLOCK_LENGTH == 0
    assert added is not edns
    parsed = dns.message.from_wire(padded)
    assert parsed.id == 4242
    assert parsed.question == q.question
    assert parsed.edns == 0
    assert padding_len(parsed) is not None


def test_long_query_pads_to_the_next_block() -> None:
    name = ".".join(["a" * 63] * 3) + ".example."  # over 128 octets before padding
    padded, _ = pad_query(dns.message.make_query(name, "A").to_wire())
    assert len(padded) == 2 * BLOCK_LENGTH


def test_client_options_and_flags_survive_and_old_padding_is_replaced() -> None:
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    q = dns.message.make_query(
        "a.example.", "A", use_edns=0, want_dnssec=True, payload=4096,
        options=[ecs, dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\x00" * 7)],
    )  # fmt: skip
    padded, added = pad_query(q.to_wire())
    assert not added
    assert len(padded) % BLOCK_LENGTH == 0
    parsed = dns.message.from_wire(padded)
    assert parsed.payload == 4096
    assert parsed.ednsflags & dns.flags.DO
    pads = [o for o in parsed.options if o.otype == dns.edns.OptionType.PADDING]
    assert len(pads) == 1
    assert [o for o in parsed.options if o.otype == dns.edns.OptionType.ECS] == [ecs]


def test_already_aligned_query_gets_a_full_option_not_a_negative_one() -> None:
    q = dns.message.make_query("a.example.", "A", use_edns=0).to_wire()
    once, _ = pad_query(q)
    twice, _ = pad_query(once)  # replacing our own padding lands on the same size
    assert twice == once


def test_signed_query_is_left_alone() -> None:
    keyring = dns.tsigkeyring.from_text({"key.example.": "c2VjcmV0c2VjcmV0c2VjcmV0"})
    q = dns.message.make_query("a.example.", "A", use_edns=0)
    q.use_tsig(keyring, keyname="key.example.")
    wire = q.to_wire()
    assert pad_query(wire) == (wire, False)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x00" * 11, bytes.fromhex("0001 0000 0001 0000 0000 0000 03 61 62"),
     bytes.fromhex("0001 0000 0001 0000 0000 0000 00 0001 0001 ff")],
)  # fmt: skip
def test_malformed_queries_raise_wire_error(blob: bytes) -> None:
    with pytest.raises(WireError):
        pad_query(blob)


def test_every_truncation_raises_or_pads() -> None:
    q = dns.message.make_query("a.example.", "A", use_edns=0).to_wire()
    for cut in range(len(q)):
        with pytest.raises(WireError):
            pad_query(q[:cut])


def test_strip_opt_restores_a_plain_answer() -> None:
    q = dns.message.make_query("a.example.", "A", use_edns=False)
    padded, added = pad_query(q.to_wire())
    assert added
    r = dns.message.make_response(dns.message.from_wire(padded))
    r.answer.append(dns.rrset.from_text("a.example.", 60, "IN", "A", "192.0.2.1"))
    stripped = dns.message.from_wire(strip_opt(r.to_wire()))
    assert stripped.edns == -1
    assert stripped.answer == r.answer


def test_strip_opt_leaves_answers_without_opt_alone() -> None:
    r = dns.message.make_response(dns.message.make_query("a.example.", "A", use_edns=False))
    assert strip_opt(r.to_wire()) == r.to_wire()
