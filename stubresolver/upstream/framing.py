"""The DNS-message handling DoT and DoH share around their own framing: the query made
ready for the wire (question key, padding) and the answer made ready for the client.

The padding (RFC 8467 4.1: a multiple of 128 octets) may add an OPT record the client did
not send; ``finish_answer`` takes it out again so a client without EDNS gets no OPT back
(RFC 6891 7).
"""

from __future__ import annotations

import contextlib

from stubresolver import padding, wire
from stubresolver.errors import UpstreamError, WireError


def read_query(query: bytes, label: str) -> tuple[int, bytes, bytes, bool]:
    """(caller's ID, question key, padded query, OPT added) or UpstreamError(protocol)."""
    try:
        key = wire.question_key(query)
        padded, added = padding.pad_query(query)
        return wire.get_id(query), key, padded, added
    except WireError as exc:
        raise UpstreamError("protocol", label, f"unreadable query: {exc}") from exc


def finish_answer(answer: bytes, orig_id: int, added_opt: bool) -> bytes:
    """The answer as the client expects it: its ID, and no OPT if it sent none."""
    if added_opt:
        # An unwalkable additional section: pass the answer on as the server sent it.
        with contextlib.suppress(WireError):
            answer = padding.strip_opt(answer)
    return wire.with_id(answer, orig_id)


def answers_question(msg: bytes, key: bytes) -> bool:
    """A response whose question is ``key``; or one with no question at all (FORMERR etc.,
    RFC 1035 allows it), which is fine on an authenticated stream once the ID matched."""
    if not wire.is_response(msg) or len(msg) < wire.HEADER_LEN:
        return False
    if msg[4] == 0 and msg[5] == 0:
        return True
    try:
        return wire.question_key(msg) == key
    except WireError:
        return False
