"""resolver: the order of decisions, fail-closed refusal, single-flight, failover, epochs.

Upstreams here are fakes that live in the test suite (STYLE.md 9): one fails the test if it is
ever called, which is how "the tunnel is down, so nothing is sent" is asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import dns.edns
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from stubresolver import wire
from stubresolver.cache import Cache
from stubresolver.errors import UpstreamError
from stubresolver.policy import LocalPolicy
from stubresolver.resolver import AnswerNow, Drop, Forward, Outcome, Resolver
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream.base import Awaited

UP = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("10.66.0.2",), epoch=1)
DOWN = TunnelState(up=False, ifname="wg0", ifindex=7, addresses=(), epoch=2)


def query(name: str = "www.example.", msg_id: int = 1, **kw: object) -> bytes:
    msg = dns.message.make_query(name, "A", **kw)  # type: ignore[arg-type]
    msg.id = msg_id
    return msg.to_wire()


def answer_for(data: bytes, address: str = "192.0.2.1") -> bytes:
    q = dns.message.from_wire(data)
    msg = dns.message.make_response(q)
    msg.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", address))
    return msg.to_wire()


class MustNotBeCalled:
    """Fails the test if reached. The call is also recorded, because pytest.fail raised
    inside the resolver's exchange task would only surface as a SERVFAIL (see
    `test_must_not_be_called_is_noticed`); tests check `calls` stays empty."""

    url = "udp://must-not-be-called"

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        self.calls.append(query)
        pytest.fail(f"upstream reached while it must not be: {state}")

    async def close(self) -> None:
        pass


class Fake:
    """Answers after an optional gate; records what it was sent."""

    def __init__(self, url: str = "udp://fake", fail: UpstreamError | None = None) -> None:
        self.url = url
        self.fail = fail
        self.sent: list[bytes] = []
        self.gate: asyncio.Event | None = None
        self.closed = 0

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        self.sent.append(query)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return answer_for(query)

    async def close(self) -> None:
        self.closed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    upstreams: list[object],
    state: Callable[[], TunnelState] = lambda: UP,
    clock: Clock | None = None,
    refresh: Callable[[], TunnelState] | None = None,
) -> Resolver:
    # The factory gives awaitable transports the callback form (`Awaited`); so do the tests.
    wrapped = [u if isinstance(u, CallbackFake) else Awaited(u) for u in upstreams]  # type: ignore[arg-type]
    return Resolver(
        upstreams=wrapped,
        tunnel_state=state,
        refresh_tunnel=refresh or state,
        tunnel_label="wg*",
        cache=Cache(),
        policy=LocalPolicy(),
        clock=clock or Clock(),
    )


async def resolve(resolver: Resolver, data: bytes) -> dns.message.Message:
    decision = resolver.answer_now(data)
    if isinstance(decision, Forward):
        return dns.message.from_wire(await resolver.forward(decision))
    assert isinstance(decision, AnswerNow)
    return dns.message.from_wire(decision.response)


def ede(msg: dns.message.Message) -> tuple[int, str]:
    (option,) = [o for o in msg.options if o.otype == dns.edns.EDE]
    assert isinstance(option, dns.edns.EDEOption)
    return option.code, option.text or ""


def test_tunnel_down_refuses_with_ede_and_sends_nothing() -> None:
    never = MustNotBeCalled()
    resolver = make([never], state=lambda: DOWN)
    reply = asyncio.run(resolve(resolver, query(use_edns=0)))
    # forward_cb too (the UDP listener's entry point) refuses without reaching an upstream
    parsed = wire.parse_query(query(msg_id=3))
    replies: list[bytes] = []
    resolver.forward_cb(Forward(parsed, query(msg_id=3), query(msg_id=3)), replies.append)
    assert dns.message.from_wire(replies[0]).rcode() == dns.rcode.REFUSED
    assert never.calls == []
    assert reply.rcode() == dns.rcode.REFUSED
    assert ede(reply) == (23, "tunnel wg0 down")
    assert resolver.stats.outcomes[Outcome.REFUSED_TUNNEL_DOWN] == 2


def test_absent_tunnel_names_the_patterns() -> None:
    absent = TunnelState(up=False, ifname=None, ifindex=None, addresses=(), epoch=0)
    resolver = make([MustNotBeCalled()], state=lambda: absent)
    reply = asyncio.run(resolve(resolver, query(use_edns=0)))
    assert ede(reply) == (23, "tunnel wg* down")


def test_local_names_answered_while_down() -> None:
    resolver = make([MustNotBeCalled()], state=lambda: DOWN)
    reply = asyncio.run(resolve(resolver, query("localhost.")))
    assert [r.to_text() for r in reply.answer[0]] == ["127.0.0.1"]
    assert resolver.stats.outcomes[Outcome.LOCAL] == 1


def test_forward_then_cache_hit() -> None:
    fake = Fake()
    resolver = make([fake])

    async def body() -> None:
        first = await resolve(resolver, query(msg_id=11))
        second = await resolve(resolver, query("WWW.example.", msg_id=12))
        assert first.id == 11 and second.id == 12
        assert str(second.question[0].name) == "WWW.example."

    asyncio.run(body())
    assert len(fake.sent) == 1
    assert resolver.stats.outcomes[Outcome.FORWARDED] == 1
    assert resolver.stats.outcomes[Outcome.CACHED] == 1


def test_single_flight_fans_out_with_each_clients_id_and_case() -> None:
    fake = Fake()
    resolver = make([fake])

    async def body() -> list[dns.message.Message]:
        fake.gate = asyncio.Event()
        pending = [
            asyncio.ensure_future(resolve(resolver, query(name, msg_id=i)))
            for i, name in enumerate(["www.example.", "WWW.EXAMPLE.", "wWw.ExAmPlE."], 100)
        ]
        await asyncio.sleep(0.01)
        fake.gate.set()
        return list(await asyncio.gather(*pending))

    replies = asyncio.run(body())
    assert len(fake.sent) == 1
    assert [r.id for r in replies] == [100, 101, 102]
    assert [str(r.question[0].name) for r in replies] == [
        "www.example.",
        "WWW.EXAMPLE.",
        "wWw.ExAmPlE.",
    ]
    assert all(r.answer[0][0].to_text() == "192.0.2.1" for r in replies)


def test_failover_to_the_next_upstream_and_health() -> None:
    broken = Fake("udp://broken", fail=UpstreamError("timeout", "udp://broken", "no answer"))
    good = Fake("udp://good")
    resolver = make([broken, good])
    reply = asyncio.run(resolve(resolver, query()))
    assert reply.rcode() == dns.rcode.NOERROR
    assert len(broken.sent) == 1 and len(good.sent) == 1
    assert not resolver.health[0].healthy
    assert resolver.health[0].last_error == "no answer"
    assert resolver.health[1].healthy
    # The broken one now rests: the next query goes to the good one first.
    asyncio.run(resolve(resolver, query("other.example.")))
    assert len(broken.sent) == 1
    assert len(good.sent) == 2


def test_all_upstreams_fail_gives_servfail_with_reason() -> None:
    error = UpstreamError("tls", "tls://x", "certificate verify failed: Hostname mismatch")
    resolver = make([Fake("tls://x", fail=error)])
    reply = asyncio.run(resolve(resolver, query(use_edns=0)))
    assert reply.rcode() == dns.rcode.SERVFAIL
    code, text = ede(reply)
    assert code == 22
    assert "Hostname mismatch" in text
    assert resolver.stats.outcomes[Outcome.SERVFAIL_UPSTREAM] == 1


def test_tunnel_change_fails_in_flight_queries_at_once_and_flushes() -> None:
    state = {"now": UP}
    slow = Fake()
    resolver = make([slow], state=lambda: state["now"])

    async def body() -> tuple[dns.message.Message, float]:
        warm = query("cached.example.")
        await resolve(resolver, warm)
        assert resolver.cache is not None and len(resolver.cache) == 1
        slow.gate = asyncio.Event()  # never set: only the tunnel change can end the wait
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(resolve(resolver, query(use_edns=0)))
        await asyncio.sleep(0.01)
        started = loop.time()
        state["now"] = DOWN
        resolver.tunnel_changed(UP, DOWN)
        reply = await asyncio.wait_for(task, 1.0)
        return reply, loop.time() - started

    reply, waited = asyncio.run(body())
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert ede(reply)[0] == 23
    assert waited < 0.5
    assert resolver.cache is not None and len(resolver.cache) == 0
    assert resolver.stats.outcomes[Outcome.SERVFAIL_TUNNEL_CHANGED] == 1


def test_ecs_is_stripped_before_forwarding() -> None:
    fake = Fake()
    resolver = make([fake])
    ecs = dns.edns.ECSOption("198.51.100.0", 24)
    asyncio.run(resolve(resolver, query(use_edns=0, options=[ecs], want_dnssec=True)))
    sent = dns.message.from_wire(fake.sent[0])
    assert not [o for o in sent.options if o.otype == dns.edns.ECS]
    assert sent.edns == 0


def test_bad_input_outcomes() -> None:
    resolver = make([MustNotBeCalled()])
    assert resolver.answer_now(b"\x00") == Drop(Outcome.DROPPED)
    decision = resolver.answer_now(b"\xbe\xef\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00")
    assert isinstance(decision, AnswerNow) and decision.query is None
    assert decision.response[3] & 0x0F == wire.FORMERR
    assert resolver.stats.outcomes[Outcome.DROPPED] == 1
    assert resolver.stats.outcomes[Outcome.FORMERR] == 1


Done = Callable[[bytes | None, UpstreamError | None], None]


class CallbackFake:
    """The plain-UDP form (``exchange_cb``): the resolver starts no task for it."""

    def __init__(self, url: str = "udp://cb") -> None:
        self.url = url
        self.pending: list[tuple[bytes, Done]] = []
        self.closed = 0
        self.withdrawn = 0

    def exchange_cb(
        self, query: bytes, state: TunnelState, done: Done, key: bytes
    ) -> Callable[[], None]:
        assert key == wire.question_key(query)  # the resolver hands over the question key
        self.pending.append((query, done))
        return self.withdraw

    def withdraw(self) -> None:
        self.withdrawn += 1

    def counters(self) -> dict[str, int]:
        return {}

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        pytest.fail("the callback form must be used when an upstream has one")

    async def close(self) -> None:
        self.closed += 1


def test_callback_upstream_late_answer_after_tunnel_change_is_dropped() -> None:
    state = {"now": UP}
    fake = CallbackFake()
    resolver = make([fake], state=lambda: state["now"])
    replies: list[bytes] = []

    async def body() -> None:
        data = query(use_edns=0, msg_id=5)
        decision = resolver.answer_now(data)
        assert isinstance(decision, Forward)
        resolver.forward_cb(decision, replies.append)
        assert len(fake.pending) == 1 and not replies
        moved = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("10.66.0.9",), epoch=3)
        state["now"] = moved
        resolver.tunnel_changed(UP, moved)
        assert len(replies) == 1  # answered in place, before any answer arrives
        sent, done = fake.pending[0]
        done(answer_for(sent), None)  # the old path's answer lands late
        await asyncio.sleep(0)  # let the close() tasks run

    asyncio.run(body())
    assert len(replies) == 1
    msg = dns.message.from_wire(replies[0])
    assert msg.id == 5
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert ede(msg) == (23, "tunnel wg0 changed")
    assert resolver.cache is not None and len(resolver.cache) == 0
    assert fake.closed == 1  # pools from the old epoch are closed
    assert fake.withdrawn == 1  # the exchange was withdrawn with its flight
    assert resolver.stats.outcomes[Outcome.FORWARDED] == 0


def test_connect_failure_with_tunnel_gone_tries_no_other_upstream() -> None:
    state = {"now": UP}

    class Vanishing:
        url = "udp://vanishing"

        async def exchange(self, query: bytes, state_: TunnelState) -> bytes:
            state["now"] = DOWN  # the device disappeared under the socket (ENODEV)
            raise UpstreamError("connect", self.url, "No such device")

        async def close(self) -> None:
            pass

    never = MustNotBeCalled()
    resolver = make([Vanishing(), never], state=lambda: state["now"])
    reply = asyncio.run(resolve(resolver, query(use_edns=0)))
    assert never.calls == []
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert ede(reply) == (23, "tunnel wg0 down")
    assert resolver.stats.outcomes[Outcome.SERVFAIL_TUNNEL_CHANGED] == 1


def test_epoch_error_ends_the_flight_without_failover_or_health_change() -> None:
    epoch = Fake("udp://a", fail=UpstreamError("epoch", "udp://a", "pool closed"))
    never = MustNotBeCalled()
    resolver = make([epoch, never])
    reply = asyncio.run(resolve(resolver, query(use_edns=0)))
    assert never.calls == []
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert ede(reply)[0] == 23
    assert resolver.health[0].healthy  # the tunnel's doing, not the server's


def test_tunnel_change_cancels_the_awaitable_exchange() -> None:
    cancelled = asyncio.Event()

    class Hanging:
        url = "tcp://hanging"
        closed = 0

        async def exchange(self, query: bytes, state: TunnelState) -> bytes:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            pytest.fail("not cancelled")

        async def close(self) -> None:
            Hanging.closed += 1

    state = {"now": UP}
    resolver = make([Hanging()], state=lambda: state["now"])

    async def body() -> dns.message.Message:
        task = asyncio.ensure_future(resolve(resolver, query()))
        await asyncio.sleep(0.01)
        state["now"] = DOWN
        resolver.tunnel_changed(UP, DOWN)
        reply = await asyncio.wait_for(task, 1.0)
        await asyncio.wait_for(cancelled.wait(), 1.0)
        return reply

    reply = asyncio.run(body())
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert Hanging.closed == 1


def test_answer_from_an_older_epoch_is_not_cached() -> None:
    state = {"now": UP}
    fake = Fake()
    resolver = make([fake], state=lambda: state["now"])

    async def body() -> dns.message.Message:
        fake.gate = asyncio.Event()
        task = asyncio.ensure_future(resolve(resolver, query()))
        await asyncio.sleep(0.01)
        # The monitor has published a new epoch but not yet called tunnel_changed.
        state["now"] = TunnelState(up=True, ifname="wg0", ifindex=7, addresses=("x",), epoch=9)
        fake.gate.set()
        return await asyncio.wait_for(task, 1.0)

    asyncio.run(body())
    assert resolver.cache is not None and len(resolver.cache) == 0


def test_every_query_ends_in_exactly_one_outcome() -> None:
    state = {"now": UP}
    resolver = make([Fake()], state=lambda: state["now"])

    async def body() -> None:
        await resolve(resolver, query("a.example."))  # forwarded
        await resolve(resolver, query("a.example."))  # cached
        await resolve(resolver, query("localhost."))  # local
        state["now"] = DOWN
        await resolve(resolver, query("b.example."))  # refused
        assert isinstance(resolver.answer_now(b"\x01\x02\x01\x00\x00\x00"), Drop)
        notify = dns.message.make_query("a.example.", "SOA")
        notify.set_opcode(dns.opcode.NOTIFY)
        assert isinstance(resolver.answer_now(notify.to_wire()), AnswerNow)  # notimp
        assert isinstance(resolver.answer_now(query(use_edns=1)), AnswerNow)  # badvers

    asyncio.run(body())
    assert dict(resolver.stats.outcomes) == {
        Outcome.FORWARDED: 1,
        Outcome.CACHED: 1,
        Outcome.LOCAL: 1,
        Outcome.REFUSED_TUNNEL_DOWN: 1,
        Outcome.DROPPED: 1,
        Outcome.NOTIMP: 1,
        Outcome.BADVERS: 1,
    }


def test_must_not_be_called_is_noticed() -> None:
    # The fake's own check: reached through a failover, it is recorded even though the
    # pytest.fail it raises is swallowed into a SERVFAIL by the resolver's task adapter.
    never = MustNotBeCalled()
    broken = Fake("udp://broken", fail=UpstreamError("timeout", "udp://broken", "no answer"))
    resolver = make([broken, never])
    reply = asyncio.run(resolve(resolver, query()))
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert len(never.calls) == 1


def test_forwards_are_bounded() -> None:
    fake = Fake()
    resolver = make([fake])
    resolver.flights.max_flights = 2

    async def body() -> list[dns.message.Message]:
        fake.gate = asyncio.Event()
        waiting = [
            asyncio.ensure_future(resolve(resolver, query(f"n{i}.example."))) for i in range(2)
        ]
        await asyncio.sleep(0.01)
        busy = await resolve(resolver, query("third.example.", use_edns=0))
        fake.gate.set()
        return [busy, *await asyncio.gather(*waiting)]

    busy, *answered = asyncio.run(body())
    assert busy.rcode() == dns.rcode.SERVFAIL
    assert ede(busy) == (0, "too many queries in flight")
    assert all(r.rcode() == dns.rcode.NOERROR for r in answered)
    assert len(fake.sent) == 2
    assert resolver.stats.outcomes[Outcome.SERVFAIL_BUSY] == 1


def test_an_answer_never_crosses_an_epoch_even_without_tunnel_changed() -> None:
    # The monitor publishes the new epoch; suppose tunnel_changed has not run yet.
    state = {"now": UP}
    fake = Fake()
    resolver = make([fake], state=lambda: state["now"])

    async def body() -> dns.message.Message:
        fake.gate = asyncio.Event()
        task = asyncio.ensure_future(resolve(resolver, query(use_edns=0)))
        await asyncio.sleep(0.01)
        state["now"] = TunnelState(
            up=True, ifname="wg0", ifindex=8, addresses=UP.addresses, epoch=3
        )
        fake.gate.set()
        return await asyncio.wait_for(task, 1.0)

    reply = asyncio.run(body())
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert ede(reply) == (23, "tunnel wg0 changed")
    assert resolver.cache is not None and len(resolver.cache) == 0


def test_repeated_query_bytes_take_the_hit_path_with_their_own_id() -> None:
    fake = Fake()
    clock = Clock()
    resolver = make([fake], clock=clock)

    async def body() -> None:
        await resolve(resolver, query("WwW.example.", msg_id=1))
        for msg_id in (2, 3, 0xFFFF):
            reply = await resolve(resolver, query("WwW.example.", msg_id=msg_id))
            assert reply.id == msg_id
            assert str(reply.question[0].name) == "WwW.example."
        clock.now += 301  # expired: the remembered parse must not answer from a stale entry
        await resolve(resolver, query("WwW.example.", msg_id=4))

    asyncio.run(body())
    assert len(fake.sent) == 2
    assert resolver.stats.outcomes[Outcome.CACHED] == 3


def test_remembered_queries_are_bounded_and_never_answer_local_names() -> None:
    resolver = make([Fake()], state=lambda: DOWN)
    for _ in range(3):
        reply = asyncio.run(resolve(resolver, query("localhost.")))
        assert [r.to_text() for r in reply.answer[0]] == ["127.0.0.1"]
    assert resolver.stats.outcomes[Outcome.LOCAL] == 3
    up = make([Fake()])
    for i in range(50):
        up.answer_now(query(f"miss{i}.example."))
    hot = up.decider.hot
    assert len(hot) == 0  # only queries that hit are remembered
    assert up.cache is not None
    hot.max_bytes = 64 * 1024
    for i in range(2000):
        data = query(f"n{i}.example.")
        up.cache.store(wire.parse_query(data), answer_for(data), 1000.0)
        up.answer_now(data)
        assert hot.size_bytes <= hot.max_bytes
    assert 0 < len(hot) < 2000


# --- bounds, re-probe and reload (issue 7) ------------------------------------------------


def test_a_large_query_that_hits_is_not_remembered_and_the_memo_stays_in_budget() -> None:
    from stubresolver.hotqueries import MAX_QUERY

    up = make([Fake()])
    assert up.cache is not None
    pad = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"x" * 1100)
    big = query("big.example.", use_edns=0, options=[pad])
    assert len(big) > MAX_QUERY
    up.cache.store(wire.parse_query(big), answer_for(big), 1000.0)
    assert isinstance(up.answer_now(big), AnswerNow)  # a hit ...
    assert len(up.decider.hot) == 0  # ... that pins nothing


def test_waiters_per_flight_are_bounded_in_count() -> None:
    fake = Fake()
    resolver = make([fake])
    resolver.flights.max_waiters = 5

    async def body() -> list[dns.message.Message]:
        fake.gate = asyncio.Event()
        tasks = [
            asyncio.ensure_future(resolve(resolver, query(msg_id=i, use_edns=0))) for i in range(8)
        ]
        await asyncio.sleep(0.01)
        fake.gate.set()
        return await asyncio.gather(*tasks)

    replies = asyncio.run(body())
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR] * 5 + [dns.rcode.SERVFAIL] * 3
    assert ede(replies[-1]) == (0, "too many clients waiting for this name")
    assert len(fake.sent) == 1
    assert resolver.stats.outcomes[Outcome.SERVFAIL_BUSY] == 3
    assert resolver.flights.waiter_bytes == 0  # all handed back


def test_waiting_queries_are_bounded_in_bytes_over_all_flights() -> None:
    from stubresolver.flights import WAITER_OVERHEAD

    fake = Fake()
    resolver = make([fake])
    pad = dns.edns.GenericOption(dns.edns.OptionType.make(65001), b"x" * 700)
    one = len(query("n0.example.", use_edns=0, options=[pad])) + WAITER_OVERHEAD
    resolver.flights.max_waiter_bytes = 3 * one

    async def body() -> list[dns.message.Message]:
        fake.gate = asyncio.Event()
        tasks = [
            asyncio.ensure_future(
                resolve(resolver, query(f"n{i}.example.", use_edns=0, options=[pad]))
            )
            for i in range(5)
        ]
        await asyncio.sleep(0.01)
        assert resolver.flights.waiter_bytes <= 3 * one
        fake.gate.set()
        return await asyncio.gather(*tasks)

    replies = asyncio.run(body())
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR] * 3 + [dns.rcode.SERVFAIL] * 2
    assert ede(replies[-1]) == (0, "too many queries waiting")
    assert len(fake.sent) == 3  # a refused query starts no exchange
    assert len(resolver.flights) == 0


def test_tunnel_reprobe_after_send_errors_is_rate_limited() -> None:
    probes: list[float] = []
    clock = Clock()

    def refresh() -> TunnelState:
        probes.append(clock.now)
        return UP

    failing = Fake("udp://a", fail=UpstreamError("connect", "udp://a", "udp: ENETUNREACH"))
    resolver = make([failing], clock=clock, refresh=refresh)

    async def body() -> None:
        for i in range(40):
            await resolve(resolver, query(f"n{i}.example."))
        clock.now += 1.0
        await resolve(resolver, query("later.example."))

    asyncio.run(body())
    assert len(failing.sent) == 41
    assert probes == [1000.0, 1001.0]  # one look per interval, not one per failure


def test_a_reload_ends_the_old_resolvers_flights_and_sends_nothing_more() -> None:
    slow = Fake("udp://slow")
    never = MustNotBeCalled()
    resolver = make([slow, never])

    async def body() -> tuple[dns.message.Message, dns.message.Message]:
        slow.gate = asyncio.Event()
        task = asyncio.ensure_future(resolve(resolver, query(use_edns=0)))
        await asyncio.sleep(0.01)
        assert len(slow.sent) == 1
        resolver.retire()
        await asyncio.sleep(0)  # one loop turn: the reply was given inside retire()
        assert task.done()
        # The cancelled exchange fails; no failover to the next upstream follows.
        slow.fail = UpstreamError("timeout", "udp://slow", "no answer")
        slow.gate.set()
        await asyncio.sleep(0.01)
        late = await resolve(resolver, query("late.example.", use_edns=0))
        return task.result(), late

    reply, late = asyncio.run(body())
    assert reply.rcode() == late.rcode() == dns.rcode.SERVFAIL
    assert ede(reply) == (14, "configuration reloaded")
    assert never.calls == []
    assert len(slow.sent) == 1
    assert slow.closed == 1  # its pools closed
