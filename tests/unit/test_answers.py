"""Answers the same as the upstream gives (issue 7): AD and RD in the flight and cache key,
no OPT to a client that sent none, our UDP cap in every OPT, NOTIMP as unbound gives it, no
client cookie upstream, QDCOUNT 0 answers rejected.

The upstream is a fake that lives in the test suite (STYLE.md 9) and answers the way a
validating resolver does (RFC 6840 5.7: AD only when the query had AD or DO), or, on demand,
the way a broken one does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from stubresolver import wire
from stubresolver.cache import Cache
from stubresolver.config import parse_config
from stubresolver.errors import ConfigError, WireError
from stubresolver.policy import LocalPolicy
from stubresolver.resolver import AnswerNow, Forward, Outcome, Resolver
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.base import Awaited

UP = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("10.66.0.2",), epoch=1)

Answer = Callable[[dns.message.Message], dns.message.Message]


def validating(q: dns.message.Message) -> dns.message.Message:
    """A secure answer as a validating resolver gives it (RFC 6840 5.7, 5.8)."""
    msg = dns.message.make_response(q)
    msg.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.1"))
    if q.flags & dns.flags.AD or q.ednsflags & dns.flags.DO:
        msg.flags |= dns.flags.AD
    if q.flags & dns.flags.RD:
        msg.flags |= dns.flags.RA  # recursion only when asked for, to tell them apart
    return msg


class Upstream:
    """Records every query it is sent and answers with ``answer``."""

    url = "udp://fake"

    def __init__(self, answer: Answer = validating) -> None:
        self.answer = answer
        self.sent: list[dns.message.Message] = []
        self.raw: list[bytes] = []

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        self.raw.append(query)
        q = dns.message.from_wire(query)
        self.sent.append(q)
        return self.answer(q).to_wire()

    async def close(self) -> None:
        pass

    def counters(self) -> dict[str, int]:
        return {}


def make(upstream: Upstream, **kw: int) -> Resolver:
    return Resolver(
        upstreams=[Awaited(upstream)],
        tunnel_state=lambda: UP,
        refresh_tunnel=lambda: UP,
        tunnel_label="wg*",
        cache=Cache(),
        policy=LocalPolicy(),
        clock=lambda: 1000.0,
        **kw,  # type: ignore[arg-type]
    )


def query(name: str = "www.example.", msg_id: int = 1, **kw: object) -> dns.message.Message:
    msg = dns.message.make_query(name, "A", **kw)  # type: ignore[arg-type]
    msg.id = msg_id
    return msg


async def resolve(resolver: Resolver, data: bytes) -> bytes:
    decision = resolver.answer_now(data)
    if isinstance(decision, Forward):
        return await resolver.forward(decision)
    assert isinstance(decision, AnswerNow)
    return decision.response


def ask(resolver: Resolver, *queries: dns.message.Message) -> list[dns.message.Message]:
    """Resolve the queries one after the other (later ones may hit the cache)."""

    async def body() -> list[bytes]:
        return [await resolve(resolver, q.to_wire()) for q in queries]

    return [dns.message.from_wire(r) for r in asyncio.run(body())]


def ask_together(resolver: Resolver, *queries: dns.message.Message) -> list[dns.message.Message]:
    """Resolve the queries at once (single-flight may join them)."""

    async def body() -> list[bytes]:
        return list(await asyncio.gather(*(resolve(resolver, q.to_wire()) for q in queries)))

    return [dns.message.from_wire(r) for r in asyncio.run(body())]


def with_ad(msg: dns.message.Message) -> dns.message.Message:
    msg.flags |= dns.flags.AD
    return msg


def without_rd(msg: dns.message.Message) -> dns.message.Message:
    msg.flags &= ~dns.flags.RD
    return msg


# --- 1. AD and RD ----------------------------------------------------------------------------


def test_ad_query_without_do_gets_ad_and_plain_query_does_not_share_it() -> None:
    upstream = Upstream()
    resolver = make(upstream)
    ad, plain, ad_again = ask(resolver, with_ad(query()), query(msg_id=2), with_ad(query()))
    assert ad.flags & dns.flags.AD  # RFC 6840 5.7: AD=1 asks for AD without DO
    assert not plain.flags & dns.flags.AD  # not from the AD=1 query's cache entry
    assert ad_again.flags & dns.flags.AD  # its own cache entry
    assert [bool(q.flags & dns.flags.AD) for q in upstream.sent] == [True, False]


def test_single_flight_never_hands_an_ad_answer_to_a_query_without_ad() -> None:
    upstream = Upstream()
    resolver = make(upstream)
    ad, plain = ask_together(resolver, with_ad(query()), query(msg_id=2))
    assert ad.flags & dns.flags.AD
    assert not plain.flags & dns.flags.AD
    assert len(upstream.sent) == 2


def test_ad_from_an_upstream_is_cleared_when_the_query_had_neither_ad_nor_do() -> None:
    def always_ad(q: dns.message.Message) -> dns.message.Message:
        return with_ad(validating(q))

    resolver = make(Upstream(always_ad))
    plain, do = ask(resolver, query(), query(use_edns=0, want_dnssec=True))
    assert not plain.flags & dns.flags.AD  # RFC 6840 5.8
    assert do.flags & dns.flags.AD


def test_rd_is_part_of_the_key() -> None:
    upstream = Upstream()
    resolver = make(upstream)
    rd, no_rd = ask(resolver, query(), without_rd(query(msg_id=2)))
    assert rd.flags & dns.flags.RA
    assert not no_rd.flags & dns.flags.RA
    assert [bool(q.flags & dns.flags.RD) for q in upstream.sent] == [True, False]


# --- 2. no OPT to a client that sent none -------------------------------------------------


def servfail_with_opt(q: dns.message.Message) -> dns.message.Message:
    msg = dns.message.make_response(q)
    msg.set_rcode(dns.rcode.SERVFAIL)
    msg.use_edns(0, payload=4096)  # an upstream that always adds OPT
    return msg


def test_passed_through_servfail_carries_no_opt_to_a_non_edns_client() -> None:
    reply, edns_reply = ask(make(Upstream(servfail_with_opt)), query(), query(use_edns=0))
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert reply.edns == -1  # RFC 6891 7
    assert edns_reply.edns == 0


def test_positive_answer_with_opt_is_stripped_for_a_non_edns_client() -> None:
    def with_opt(q: dns.message.Message) -> dns.message.Message:
        msg = validating(q)
        msg.use_edns(0, payload=1232)
        return msg

    (reply,) = ask(make(Upstream(with_opt)), query())
    assert reply.edns == -1
    assert [r.to_text() for r in reply.answer[0]] == ["192.0.2.1"]


# --- 3. our UDP cap in every OPT, and upstream -----------------------------------------


def test_our_opt_advertises_the_configured_cap_upstream_and_to_clients() -> None:
    def big_opt(q: dns.message.Message) -> dns.message.Message:
        msg = validating(q)
        msg.use_edns(0, payload=4096)
        return msg

    upstream = Upstream(big_opt)
    resolver = make(upstream, udp_max_payload=1400)
    forwarded, cached, local = ask(
        resolver,
        query(use_edns=0, payload=4096),
        query(use_edns=0, payload=512),
        query("localhost.", use_edns=0, payload=4096),
    )
    assert [q.payload for q in upstream.sent] == [1400]  # we ask as we answer
    assert forwarded.payload == cached.payload == local.payload == 1400  # RFC 6891 6.2.3


# --- 4. NOTIMP --------------------------------------------------------------------------------


def notimp(edns: bool) -> dns.message.Message:
    q = query(use_edns=0 if edns else False, want_dnssec=edns)
    q.set_opcode(dns.opcode.STATUS)
    data = q.to_wire()
    try:
        wire.parse_query(data)
    except WireError as exc:
        response = wire.error_response(data, exc)
        assert response is not None
        return dns.message.from_wire(response)
    raise AssertionError("an unknown opcode was accepted")


def test_notimp_is_shaped_as_unbound_gives_it() -> None:
    for edns in (False, True):
        reply = notimp(edns)
        assert reply.rcode() == dns.rcode.NOTIMP
        assert reply.opcode() == dns.opcode.STATUS
        assert reply.flags & dns.flags.RD  # copied
        assert not reply.flags & dns.flags.RA  # no recursion offered for it
        assert reply.edns == (0 if edns else -1)
        if edns:
            assert reply.ednsflags & dns.flags.DO
            assert reply.payload == wire.OUR_UDP_PAYLOAD


# --- 5. cookies ------------------------------------------------------------------------------


def test_client_cookie_is_never_forwarded_but_other_options_are() -> None:
    upstream = Upstream()
    cookie = dns.edns.CookieOption(b"\x01" * 8, b"")
    unknown = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"hello")
    (reply,) = ask(make(upstream), query(use_edns=0, options=[cookie, unknown]))
    assert reply.rcode() == dns.rcode.NOERROR
    (sent,) = upstream.sent
    assert [o.otype for o in sent.options] == [65001]  # RFC 7873 5.1


# --- 6. QDCOUNT 0 ----------------------------------------------------------------------------


def test_answer_without_question_is_rejected_not_cached() -> None:
    def no_question(q: dns.message.Message) -> dns.message.Message:
        msg = validating(q)
        msg.question = []
        return msg

    upstream = Upstream(no_question)
    resolver = make(upstream)
    first, second = ask(resolver, query(), query(msg_id=2))
    assert first.rcode() == second.rcode() == dns.rcode.SERVFAIL
    assert len(first.question) == 1
    assert len(upstream.sent) == 2  # nothing was cached
    assert resolver.cache is not None and len(resolver.cache) == 0
    assert resolver.stats.outcomes[Outcome.SERVFAIL_UPSTREAM] == 2


# --- 3. server.udp_max_payload ------------------------------------------------------------


def test_udp_max_payload_defaults_to_flag_day_and_is_range_checked() -> None:
    upstreams = ["udp://10.8.0.1"]
    assert parse_config({"upstreams": upstreams}).server.udp_max_payload == 1232
    assert parse_config({"upstreams": upstreams, "server": {"udp_max_payload": 512}}).server
    for bad in (511, 4097, 0, "1232", True):
        with pytest.raises(ConfigError) as info:
            parse_config({"upstreams": upstreams, "server": {"udp_max_payload": bad}})
        assert info.value.path == "server.udp_max_payload"
