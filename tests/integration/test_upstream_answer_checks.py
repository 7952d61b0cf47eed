"""Upstream answers the resolver must not pass on as they are (issue 7), from real servers of
our own (DoT over a real TLS connection, plain UDP) on loopback, through the real resolver,
upstreams and cache; and what the resolver sends them.

A DoT stream may carry an answer without a question (RFC 1035 allows it for FORMERR), and
the DoT upstream accepts one once the ID matched. Patched for the client, such an answer
would get the client's question name written over its records, and be cached: it must be
rejected instead (not cached, not patched; the client gets SERVFAIL).
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import dns.rrset

from stubresolver.cache import Cache
from stubresolver.config import UpstreamConfig
from stubresolver.policy import LocalPolicy
from stubresolver.resolver import AnswerNow, Forward, Outcome, Resolver
from stubresolver.upstream.base import Awaited, Upstream
from stubresolver.upstream.plain import UdpUpstream
from stubresolver.upstream.tls import TlsUpstream
from testkit.pki import Pki

from .tlsworld import AUTH_NAME, LO, SCRIPT_TLS_ADDR, ScriptedTlsServer, query
from .upstream_servers import ScriptedUdpServer


def dot(port: int, ca: Path) -> TlsUpstream:
    return TlsUpstream(
        UpstreamConfig(
            url=f"tls://{SCRIPT_TLS_ADDR}:{port}#{AUTH_NAME}",
            scheme="tls",
            host=SCRIPT_TLS_ADDR,
            port=port,
            auth_name=AUTH_NAME,
            path=None,
            timeout=1.5,
            ca_file=str(ca),
            spki_pins=(),
        )
    )


def no_question(server: ScriptedTlsServer, batch: list[bytes]) -> list[bytes]:
    """A NOERROR answer with a record but QDCOUNT 0."""
    q = dns.message.from_wire(batch[0])
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.99"))
    r.question = []
    return [r.to_wire()]


def resolver_for(upstream: Upstream) -> Resolver:
    return Resolver(
        upstreams=[upstream],
        tunnel_state=lambda: LO,
        refresh_tunnel=lambda: LO,
        tunnel_label="lo",
        cache=Cache(),
        policy=LocalPolicy(),
    )


def ask(resolver: Resolver, queries: list[bytes]) -> list[dns.message.Message]:
    replies: list[dns.message.Message] = []

    async def go() -> None:
        for data in queries:
            decision = resolver.answer_now(data)
            if isinstance(decision, Forward):
                response = await resolver.forward(decision)
            else:
                assert isinstance(decision, AnswerNow)
                response = decision.response
            replies.append(dns.message.from_wire(response))
        await resolver.close()

    asyncio.run(go())
    return replies


def servfail_with_opt(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
    """An upstream that puts an OPT into every SERVFAIL, asked with EDNS or not."""
    r = dns.message.make_response(dns.message.from_wire(data))
    r.set_rcode(dns.rcode.SERVFAIL)
    r.use_edns(0, payload=4096)
    server.sock.sendto(r.to_wire(), peer)


def udp_upstream(server: ScriptedUdpServer) -> UdpUpstream:
    return UdpUpstream(
        UpstreamConfig(
            url=f"udp://{server.addr}:{server.port}",
            scheme="udp",
            host=server.addr,
            port=server.port,
            auth_name=None,
            path=None,
            timeout=1.5,
        )
    )


def answer(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
    r = dns.message.make_response(dns.message.from_wire(data))
    r.answer.append(dns.rrset.from_text(r.question[0].name, 300, "IN", "A", "192.0.2.5"))
    server.sock.sendto(r.to_wire(), peer)


def test_the_upstream_gets_our_udp_size_and_no_client_cookie_or_subnet() -> None:
    cookie = dns.edns.CookieOption(bytes(range(8)), b"")
    subnet = dns.edns.ECSOption("198.51.100.0", 24)
    unknown = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"kept")
    q = dns.message.make_query("www.example.", "A", use_edns=0, payload=4096)
    q.use_edns(0, payload=4096, options=[cookie, subnet, unknown])
    with ScriptedUdpServer(script=answer) as server:
        (reply,) = ask(resolver_for(udp_upstream(server)), [q.to_wire()])
        (sent,) = [dns.message.from_wire(m) for m in server.received]
    assert reply.rcode() == dns.rcode.NOERROR
    assert [int(o.otype) for o in sent.options] == [65001]  # RFC 7873 5.1, RFC 7871 7.1.2
    assert sent.payload == 1232  # what we answer with, not the client's 4096


def test_a_passed_through_servfail_has_no_opt_for_a_client_that_sent_none() -> None:
    with ScriptedUdpServer(script=servfail_with_opt) as server:
        plain, edns = ask(
            resolver_for(udp_upstream(server)),
            [query("www.example.", msg_id=1), query("www.example.", edns=True, msg_id=2)],
        )
    assert plain.rcode() == edns.rcode() == dns.rcode.SERVFAIL
    assert plain.edns == -1  # RFC 6891 7
    assert edns.edns == 0 and edns.payload == 1232  # our cap, not the upstream's 4096


def test_an_answer_without_question_is_rejected_not_patched_or_cached(pki: Pki) -> None:
    with ScriptedTlsServer(pki, no_question) as server:
        resolver = resolver_for(Awaited(dot(server.port, pki.ca)))
        replies = ask(resolver, [query("www.example.", msg_id=i) for i in (1, 2)])
    assert [r.rcode() for r in replies] == [dns.rcode.SERVFAIL, dns.rcode.SERVFAIL]
    assert all(len(r.question) == 1 and not r.answer for r in replies)
    assert len(server.queries) == 2  # the second was forwarded again: nothing cached
    assert resolver.cache is not None and len(resolver.cache) == 0
    assert resolver.stats.outcomes[Outcome.SERVFAIL_UPSTREAM] == 2


def test_a_malformed_or_oversized_query_fails_alone_and_never_reaches_the_upstream() -> None:
    """Issue 7: trailing bytes, an EDNS option past its OPT and a 64 KB query (as TCP may
    carry) are FORMERR for themselves; the upstream never sees them, stays healthy, and
    other clients asking the same question get their answer."""
    good = query("www.example.", edns=True, msg_id=7)
    trailing = query("www.example.", msg_id=8) + b"\x00garbage"
    overrun = bytearray(query("www.example.", edns=True, msg_id=9))
    overrun[-2:] = b"\x00\x08"  # RDLEN 8 ...
    overrun += b"\x00\x08\x00\x20\x00\x01\x18\x00"  # ... holding an option claiming 32 octets
    # 64 KB in all, by hand: one unknown option of 65,000 octets (dnspython will not render it).
    plain = query("www.example.", msg_id=10)
    option = struct.pack("!HH", 65001, 65000) + b"x" * 65000
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(option)) + option
    huge = plain[:10] + b"\x00\x01" + plain[12:] + opt
    assert len(huge) > 65000
    with ScriptedUdpServer(script=answer) as server:
        resolver = resolver_for(udp_upstream(server))
        replies = ask(resolver, [trailing, bytes(overrun), huge, good])
        received = list(server.received)
    assert [r.rcode() for r in replies] == [dns.rcode.FORMERR] * 3 + [dns.rcode.NOERROR]
    assert replies[3].id == 7 and replies[3].answer
    assert len(received) == 1  # only the good query went upstream
    assert resolver.health[0].healthy and resolver.health[0].failures == 0
    assert resolver.stats.outcomes[Outcome.FORMERR] == 3
