"""The query and answer handling DoT and DoH share (upstream/framing.py): the padded query,
the caller's ID and OPT put back, and which responses answer a question."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import pytest

from stubresolver import wire
from stubresolver.errors import UpstreamError
from stubresolver.upstream.framing import answers_question, finish_answer, read_query


def make_query(name: str = "a.example.", *, edns: bool = False, msg_id: int = 0x1234) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=0 if edns else False)
    q.id = msg_id
    return q.to_wire()


def test_read_query_pads_and_remembers_the_caller() -> None:
    raw = make_query()
    orig_id, key, padded, added = read_query(raw, "tls://x")
    assert orig_id == 0x1234
    assert key == wire.question_key(raw)
    assert len(padded) % 128 == 0  # RFC 8467 4.1
    assert added  # the client sent no OPT: the padding brought one
    _, _, _, added_with_edns = read_query(make_query(edns=True), "tls://x")
    assert not added_with_edns


def test_unreadable_query_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamError) as info:
        read_query(b"\x12\x34\x01\x00\x00\x01", "tls://x")
    assert info.value.kind == "protocol"
    assert info.value.upstream == "tls://x"


@pytest.mark.parametrize("edns", [False, True])
def test_finish_answer_restores_the_id_and_the_clients_edns(edns: bool) -> None:
    _, _, padded, added = read_query(make_query(edns=edns), "tls://x")
    on_wire = dns.message.from_wire(wire.with_id(padded, 0x0BAD))
    response = dns.message.make_response(on_wire)  # carries an OPT: the query had one
    answer = finish_answer(response.to_wire(), 0x1234, added)
    msg = dns.message.from_wire(answer)
    assert msg.id == 0x1234
    assert msg.edns == (0 if edns else -1)


def test_answers_question_matches_the_question_only() -> None:
    raw = make_query("a.example.")
    key = wire.question_key(raw)
    response = dns.message.make_response(dns.message.from_wire(raw)).to_wire()
    assert answers_question(response, key)
    other = dns.message.make_response(dns.message.from_wire(make_query("b.example.")))
    assert not answers_question(other.to_wire(), key)
    assert not answers_question(raw, key)  # a query (QR=0) is no answer
    assert not answers_question(response[:5], key)


def test_answer_without_a_question_is_accepted() -> None:
    # FORMERR and the like may carry no question (RFC 1035 4.1.1); ID matched already.
    msg = dns.message.Message(id=7)
    msg.flags |= dns.flags.QR
    msg.set_rcode(dns.rcode.FORMERR)
    assert answers_question(msg.to_wire(), wire.question_key(make_query()))
