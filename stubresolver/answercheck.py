"""What an upstream answer must be before any client sees it (pure, STYLE.md 1).

Every transport already matched source, ID and question. This is the last gate before the
cache: an answer without our question (QDCOUNT 0, RFC 9619) would be patched into garbage
and cached, and one whose records cannot be read cannot be shaped. Such an answer is never
cached or patched; the resolver tries the next upstream, then answers SERVFAIL.
"""

from __future__ import annotations

from stubresolver import wire
from stubresolver.errors import UpstreamError, WireError


def checked_answer(response: bytes, question: bytes, key: bytes, payload: int, url: str) -> bytes:
    """The answer fit for the clients of ``key`` (`wire.shape_answer`: AD, OPT, UDP size),
    or UpstreamError("protocol") for one we must not pass on."""
    if not wire.has_question(response, question):
        raise UpstreamError("protocol", url, "answer without our question")
    try:
        return wire.shape_answer(response, key, payload)
    except WireError as exc:
        raise UpstreamError("protocol", url, f"unreadable answer: {exc}") from exc
