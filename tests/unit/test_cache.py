"""cache: hits with TTLs aged by the passed-in clock, expiry, negative caching, bounds."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from stubresolver import wire
from stubresolver.cache import Cache, CacheLimits


def query(name: str = "www.example.", rdtype: str = "A", msg_id: int = 1, **kw: object) -> bytes:
    msg = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    msg.id = msg_id
    return msg.to_wire()


def answer(
    data: bytes, ttl: int = 300, rcode: dns.rcode.Rcode = dns.rcode.NOERROR, soa: bool = False
) -> bytes:
    q = dns.message.from_wire(data)
    msg = dns.message.make_response(q)
    msg.set_rcode(rcode)
    if rcode == dns.rcode.NOERROR and not soa:
        msg.answer.append(dns.rrset.from_text(q.question[0].name, ttl, "IN", "A", "192.0.2.1"))
    if soa:
        msg.authority.append(
            dns.rrset.from_text(
                "example.", 3600, "IN", "SOA", "ns.example. h.example. 1 3600 600 86400 60"
            )
        )
    return msg.to_wire()


def parsed(data: bytes) -> wire.Query:
    return wire.parse_query(data)


def test_hit_restores_id_and_case_and_ages_ttl() -> None:
    cache = Cache()
    first = query("www.example.", msg_id=1)
    assert cache.lookup(parsed(first), 100.0) is None
    assert cache.store(parsed(first), answer(first), 100.0)
    second = query("WwW.ExAmPlE.", msg_id=2)
    hit = cache.lookup(parsed(second), 130.4)
    assert hit is not None
    msg = dns.message.from_wire(hit)
    assert msg.id == 2
    assert str(msg.question[0].name) == "WwW.ExAmPlE."
    assert msg.answer[0].ttl == 270
    assert (cache.hits, cache.misses) == (1, 1)


def test_expiry_uses_the_clock_passed_in() -> None:
    cache = Cache()
    data = query()
    cache.store(parsed(data), answer(data, ttl=10), 0.0)
    assert cache.lookup(parsed(data), 9.9) is not None
    assert cache.lookup(parsed(data), 10.0) is None
    assert len(cache) == 0


def test_negative_answers_cached_for_soa_minimum() -> None:
    cache = Cache()
    data = query("nope.example.")
    assert cache.store(parsed(data), answer(data, rcode=dns.rcode.NXDOMAIN, soa=True), 0.0)
    hit = cache.lookup(parsed(data), 59.0)
    assert hit is not None
    assert dns.message.from_wire(hit).rcode() == dns.rcode.NXDOMAIN
    assert cache.lookup(parsed(data), 60.0) is None


def test_nodata_cached_and_negative_cap() -> None:
    cache = Cache(CacheLimits(negative_max_ttl=5))
    data = query("www.example.", "AAAA")
    assert cache.store(parsed(data), answer(data, soa=True), 0.0)
    assert cache.lookup(parsed(data), 4.0) is not None
    assert cache.lookup(parsed(data), 5.0) is None


def test_uncacheable_answers() -> None:
    cache = Cache()
    data = query()
    assert not cache.store(parsed(data), answer(data, rcode=dns.rcode.SERVFAIL), 0.0)
    assert not cache.store(parsed(data), answer(data, rcode=dns.rcode.REFUSED), 0.0)
    # NXDOMAIN without SOA: no negative TTL to go by (RFC 2308 5).
    assert not cache.store(parsed(data), answer(data, rcode=dns.rcode.NXDOMAIN), 0.0)
    truncated = dns.message.from_wire(answer(data))
    truncated.flags |= dns.flags.TC
    assert not cache.store(parsed(data), truncated.to_wire(), 0.0)
    assert not cache.store(parsed(data), answer(data, ttl=0), 0.0)
    assert not cache.store(parsed(data), b"\x00\x01garbage", 0.0)
    assert len(cache) == 0


def test_do_cd_and_edns_are_separate_entries() -> None:
    cache = Cache()
    plain = query()
    cache.store(parsed(plain), answer(plain), 0.0)
    assert cache.lookup(parsed(query(want_dnssec=True)), 1.0) is None
    assert cache.lookup(parsed(query(use_edns=0)), 1.0) is None
    cd = dns.message.from_wire(plain)
    cd.flags |= dns.flags.CD
    assert cache.lookup(parsed(cd.to_wire()), 1.0) is None
    assert cache.lookup(parsed(plain), 1.0) is not None


def test_lru_eviction_by_entries() -> None:
    cache = Cache(CacheLimits(max_entries=2))
    a, b, c = query("a.example."), query("b.example."), query("c.example.")
    cache.store(parsed(a), answer(a), 0.0)
    cache.store(parsed(b), answer(b), 0.0)
    assert cache.lookup(parsed(a), 1.0) is not None  # a is now the most recent
    cache.store(parsed(c), answer(c), 1.0)
    assert len(cache) == 2
    assert cache.lookup(parsed(b), 2.0) is None
    assert cache.lookup(parsed(a), 2.0) is not None
    assert cache.lookup(parsed(c), 2.0) is not None


def test_byte_bound() -> None:
    cache = Cache(CacheLimits(max_entries=10_000, max_bytes=4_000))
    for i in range(100):
        data = query(f"n{i}.example.")
        cache.store(parsed(data), answer(data), 0.0)
    assert 0 < len(cache) < 100
    assert cache.size_bytes <= 4_000


def test_ttl_clamps() -> None:
    cache = Cache(CacheLimits(max_ttl=60, min_ttl=0))
    data = query()
    cache.store(parsed(data), answer(data, ttl=3600), 0.0)
    hit = cache.lookup(parsed(data), 0.0)
    assert hit is not None
    assert dns.message.from_wire(hit).answer[0].ttl == 60
    assert cache.lookup(parsed(data), 60.0) is None
    keep = Cache(CacheLimits(min_ttl=30))
    keep.store(parsed(data), answer(data, ttl=5), 0.0)
    late = keep.lookup(parsed(data), 20.0)
    assert late is not None
    assert dns.message.from_wire(late).answer[0].ttl == 0  # never a negative TTL


def test_flush_and_replace() -> None:
    cache = Cache()
    data = query()
    cache.store(parsed(data), answer(data, ttl=100), 0.0)
    cache.store(parsed(data), answer(data, ttl=200), 0.0)
    assert len(cache) == 1
    assert cache.flush() == 1
    assert len(cache) == 0
    assert cache.size_bytes == 0


def test_negative_hit_never_reports_more_than_it_is_kept() -> None:
    # RFC 2308 5: the SOA of a negative answer is served with TTL min(SOA TTL, MINIMUM),
    # decremented like any cached record. The fixture's SOA has TTL 3600 but MINIMUM 60,
    # so the entry lives 60 s and a hit at 10 s must say 50, not 3590.
    cache = Cache()
    data = query("nope.example.")
    assert cache.store(parsed(data), answer(data, rcode=dns.rcode.NXDOMAIN, soa=True), 0.0)
    hit = cache.lookup(parsed(data), 10.0)
    assert hit is not None
    assert dns.message.from_wire(hit).authority[0].ttl == 50
    capped = Cache(CacheLimits(negative_max_ttl=5))
    assert capped.store(parsed(data), answer(data, rcode=dns.rcode.NXDOMAIN, soa=True), 0.0)
    hit = capped.lookup(parsed(data), 1.0)
    assert hit is not None
    assert dns.message.from_wire(hit).authority[0].ttl == 4


def test_eviction_and_expiry_keep_byte_accounting_exact() -> None:
    cache = Cache(CacheLimits(max_entries=3))
    for i in range(10):
        data = query(f"n{i}.example.")
        cache.store(parsed(data), answer(data, ttl=100), float(i))
    assert len(cache) == 3
    for i in range(7, 10):  # the three most recent survive
        assert cache.lookup(parsed(query(f"n{i}.example.")), 10.0) is not None
    for i in range(7, 10):  # expiry removes each entry and every byte it was counted with
        assert cache.lookup(parsed(query(f"n{i}.example.")), 1000.0) is None
    assert len(cache) == 0
    assert cache.size_bytes == 0
