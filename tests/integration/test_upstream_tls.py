"""DNS-over-TLS upstream against real servers on loopback (`lo` stands in for the tunnel):
unbound with a certificate from a CA the tests make, and a scripted DoT server of our own."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from dataclasses import replace
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from stubresolver import wire
from stubresolver.cache import Cache
from stubresolver.config import UpstreamConfig
from stubresolver.errors import UpstreamError
from stubresolver.policy import LocalPolicy
from stubresolver.resolver import Forward, Resolver
from stubresolver.upstream.base import Awaited, settle_future
from stubresolver.upstream.factory import make_upstream
from stubresolver.upstream.tls import TlsUpstream
from testkit.pki import Pki

from .tlsworld import (
    AUTH_NAME,
    CALLER_ID,
    LO,
    SCRIPT_TLS_ADDR,
    ConnectCounter,
    ScriptedTlsServer,
    UnboundTls,
    addresses,
    answer_a,
    query,
    run,
)


def dot_cfg(
    host: str, port: int, ca: Path | None, *, auth_name: str | None = AUTH_NAME,
    pins: tuple[str, ...] = (), timeout: float = 1.5,
) -> UpstreamConfig:  # fmt: skip
    return UpstreamConfig(
        url=f"tls://{host}:{port}#{auth_name}",
        scheme="tls",
        host=host,
        port=port,
        auth_name=auth_name,
        path=None,
        timeout=timeout,
        ca_file=str(ca) if ca else None,
        spki_pins=pins,
    )


# --- answers, reuse, padding, resumption -------------------------------------------------


def test_answer_over_dot(unbound: UnboundTls, pki: Pki, connects: ConnectCounter) -> None:
    before = unbound.stats().get("num.query.tls", 0)
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca, pins=(pki.pin(),)))

    async def go() -> None:
        raw = await up.exchange(query("a.example."), LO)
        msg = dns.message.from_wire(raw)
        assert msg.id == CALLER_ID
        assert msg.rcode() == dns.rcode.NOERROR
        assert addresses(raw) == ["192.0.2.1"]
        # We added an OPT for the padding; the client sent none, so it gets none back.
        assert msg.edns == -1
        with_edns = dns.message.from_wire(await up.exchange(query("b.example.", edns=True), LO))
        assert with_edns.edns == 0
        assert up.counters()["open_connections"] == 1
        await up.close()
        assert up.counters()["open_connections"] == 0

    run(go)
    assert connects.count == 1
    assert unbound.stats()["num.query.tls"] - before == 2


def test_connection_is_reused_and_pipelined(
    unbound: UnboundTls, pki: Pki, connects: ConnectCounter
) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))

    async def go() -> None:
        for _ in range(3):
            assert addresses(await up.exchange(query("a.example."), LO)) == ["192.0.2.1"]
        conn = up.connection
        names = ["a.example.", "b.example."] * 10
        raws = await asyncio.gather(
            *(up.exchange(query(n, msg_id=i), LO) for i, n in enumerate(names))
        )
        for i, (name, raw) in enumerate(zip(names, raws, strict=True)):
            assert dns.message.from_wire(raw).id == i
            assert addresses(raw) == (["192.0.2.1"] if name == "a.example." else ["192.0.2.2"])
        assert up.connection is conn
        await up.close()

    run(go)
    assert connects.count == 1
    assert up.counters()["handshakes"] == 1
    assert up.counters()["reused"] == 22  # 23 queries, the first one opened it


def test_session_is_resumed_on_reconnect(unbound: UnboundTls, pki: Pki) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        await up.close()
        await up.exchange(query("a.example."), LO)
        await up.close()

    run(go)
    assert up.counters()["handshakes"] == 2
    assert up.counters()["resumed"] == 1


def test_session_is_resumed_within_an_epoch_but_never_across_one(
    unbound: UnboundTls, pki: Pki
) -> None:
    # Issue 7: a resumed session (RFC 8446 2.2, RFC 5077) lets the server link the
    # connections before and after a tunnel change; a new epoch starts from a full handshake.
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))
    resumed: list[tuple[int, bool]] = []

    async def connect_in(epoch: int) -> None:
        await up.exchange(query("a.example."), replace(LO, epoch=epoch))
        conn = up.connection
        assert conn is not None
        resumed.append((epoch, conn.stream.resumed))
        await up.close()

    async def go() -> None:
        for epoch in (1, 1, 2, 2):
            await connect_in(epoch)

    run(go)
    assert resumed == [(1, False), (1, True), (2, False), (2, True)]


def test_queries_are_padded_and_answers_out_of_order_matched(pki: Pki) -> None:
    def reverse(server: ScriptedTlsServer, batch: list[bytes]) -> list[bytes]:
        answers = [answer_a(q, f"192.0.2.{10 + i}") for i, q in enumerate(batch)]
        return answers[::-1]

    with ScriptedTlsServer(pki, reverse, batch=2) as server:
        up = TlsUpstream(dot_cfg(SCRIPT_TLS_ADDR, server.port, pki.ca))
        results: list[bytes] = []

        async def go() -> None:
            first = asyncio.ensure_future(up.exchange(query("one.example.", msg_id=1), LO))
            await asyncio.sleep(0.05)  # the first is on the wire before the second
            second = asyncio.ensure_future(up.exchange(query("two.example.", msg_id=2), LO))
            results.extend(await asyncio.gather(first, second))
            await up.close()

        run(go)
        assert server.connections == 1
        assert [dns.message.from_wire(r).id for r in results] == [1, 2]
        assert addresses(results[0]) == ["192.0.2.10"]
        assert addresses(results[1]) == ["192.0.2.11"]
        # RFC 8467 4.1: every query padded to a multiple of 128 octets; fresh IDs on the wire.
        assert [len(q) % 128 for q in server.queries] == [0, 0]
        wire_ids = {dns.message.from_wire(q).id for q in server.queries}
        assert len(wire_ids) == 2


def test_mismatched_answer_is_ignored_until_the_deadline(pki: Pki) -> None:
    def wrong_question(server: ScriptedTlsServer, batch: list[bytes]) -> list[bytes]:
        q = dns.message.from_wire(batch[0])
        other = dns.message.make_query("evil.example.", "A")
        other.id = q.id
        return [answer_a(other.to_wire(), "203.0.113.66")]

    with ScriptedTlsServer(pki, wrong_question) as server:
        up = TlsUpstream(dot_cfg(SCRIPT_TLS_ADDR, server.port, pki.ca, timeout=0.5))

        async def go() -> None:
            with pytest.raises(UpstreamError) as info:
                await up.exchange(query("a.example."), LO)
            assert info.value.kind == "timeout"
            await up.close()

        run(go)


def test_silent_server_times_out_and_drops_the_connection(pki: Pki) -> None:
    with ScriptedTlsServer(pki, lambda server, batch: []) as server:
        up = TlsUpstream(dot_cfg(SCRIPT_TLS_ADDR, server.port, pki.ca, timeout=0.4))

        async def go() -> None:
            start = time.monotonic()
            with pytest.raises(UpstreamError) as info:
                await up.exchange(query("a.example."), LO)
            assert info.value.kind == "timeout"
            assert time.monotonic() - start < 1.0
            assert up.connection is None  # nothing came back at all: presumed dead
            assert up.counters()["open_connections"] == 0

        run(go)


def test_cancelled_query_leaves_the_connection_usable(unbound: UnboundTls, pki: Pki) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        task = asyncio.ensure_future(up.exchange(query("b.example."), LO))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert addresses(await up.exchange(query("b.example."), LO)) == ["192.0.2.2"]
        assert up.counters()["handshakes"] == 1
        await up.close()

    run(go)


def test_idle_connection_is_closed(unbound: UnboundTls, pki: Pki) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca), idle_timeout=0.2)

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        assert up.counters()["open_connections"] == 1
        await asyncio.sleep(0.4)
        assert up.connection is None
        assert up.counters()["open_connections"] == 0
        await up.exchange(query("a.example."), LO)
        await up.close()

    run(go)
    assert up.counters()["handshakes"] == 2


# --- authentication failures: hard, no cleartext ------------------------------------------


def expect_tls_error(up: TlsUpstream, *needles: str) -> UpstreamError:
    errors: list[UpstreamError] = []

    async def go() -> None:
        for _ in range(3):
            with pytest.raises(UpstreamError) as info:
                await up.exchange(query("a.example."), LO)
            errors.append(info.value)
        await up.close()

    run(go)
    assert all(e.kind == "tls" for e in errors)
    assert len({e.message for e in errors}) == 1
    for needle in needles:
        assert needle in errors[0].message
    assert up.counters()["connect_failures"] == 1  # backing off: one handshake tried
    return errors[0]


def test_wrong_auth_name_fails(
    unbound: UnboundTls, pki: Pki, connects: ConnectCounter, caplog: pytest.LogCaptureFixture
) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca, auth_name="dns.wrong.example"))
    caplog.set_level("WARNING")
    expect_tls_error(up, "certificate verify failed", "dns.wrong.example")
    # Backoff: the later queries failed at once, without another handshake ...
    assert connects.count == 1
    # ... and the transport logs no health of its own: the resolver's ledger does that.
    assert not [r for r in caplog.records if "failed" in r.getMessage()]


def test_a_dot_failure_is_logged_once_by_the_one_health_ledger(
    unbound: UnboundTls, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca, auth_name="dns.wrong.example"))
    resolver = Resolver(
        upstreams=[Awaited(up)],
        tunnel_state=lambda: LO,
        refresh_tunnel=lambda: LO,
        tunnel_label="lo",
        cache=Cache(),
        policy=LocalPolicy(),
    )
    caplog.set_level("WARNING")

    async def go() -> list[dns.rcode.Rcode]:
        rcodes: list[dns.rcode.Rcode] = []
        for i in range(3):
            decision = resolver.answer_now(query(f"n{i}.example."))
            assert isinstance(decision, Forward)
            rcodes.append(dns.message.from_wire(await resolver.forward(decision)).rcode())
        await resolver.close()
        return rcodes

    assert asyncio.run(go()) == [dns.rcode.SERVFAIL] * 3
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 1, failed  # once per reason, in one place (issue 8)
    assert not resolver.health[0].healthy
    assert "certificate verify failed" in (resolver.health[0].last_error or "")


def test_untrusted_ca_fails(unbound: UnboundTls, pki: Pki) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.other_ca))
    expect_tls_error(up, "certificate verify failed")


def test_system_cas_do_not_trust_the_test_ca(unbound: UnboundTls) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, None))
    expect_tls_error(up, "certificate verify failed")


def test_wrong_pin_fails(unbound: UnboundTls, pki: Pki) -> None:
    cfg = dot_cfg(unbound.addr, unbound.dot_port, pki.ca, pins=(pki.pin(pki.other_key),))
    expect_tls_error(TlsUpstream(cfg), "SPKI pin mismatch", pki.pin())


def test_ip_is_verified_when_there_is_no_auth_name(unbound: UnboundTls, pki: Pki) -> None:
    # The certificate carries IP:127.0.30.1; without '#name' the IP itself is checked.
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca, auth_name=None))

    async def go() -> None:
        assert addresses(await up.exchange(query("a.example."), LO)) == ["192.0.2.1"]
        await up.close()

    run(go)


def test_plain_dns_server_is_a_tls_error_never_cleartext(pki: Pki) -> None:
    # A server that does not speak TLS: the handshake fails; no query is sent in the clear.
    received: list[bytes] = []
    with socket.socket() as listener:
        listener.bind((SCRIPT_TLS_ADDR, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        up = TlsUpstream(dot_cfg(SCRIPT_TLS_ADDR, port, pki.ca, timeout=0.5))

        async def go() -> None:
            loop = asyncio.get_running_loop()
            listener.setblocking(False)
            task = asyncio.ensure_future(up.exchange(query("a.example."), LO))
            conn, _ = await loop.sock_accept(listener)
            with conn:
                received.append(await loop.sock_recv(conn, 65535))  # the ClientHello
                await loop.sock_sendall(conn, b"\x00\x0c" + bytes(12))  # "DNS" in the clear
            with pytest.raises(UpstreamError) as info:
                await task
            assert info.value.kind == "tls"

        run(go)
    assert received[0][:1] == b"\x16"  # TLS handshake record, not a DNS message
    assert b"a\x07example" not in received[0]


# --- tunnel and server events --------------------------------------------------------------


def test_epoch_change_rebuilds_the_pool(
    unbound: UnboundTls, pki: Pki, connects: ConnectCounter
) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        old = up.connection
        assert old is not None
        await up.exchange(query("a.example."), replace(LO, epoch=2))
        assert up.connection is not old
        assert old.error is not None and old.error.kind == "epoch"
        assert up.counters()["open_connections"] == 1
        await up.close()

    run(go)
    assert connects.count == 2
    assert up.counters()["resumed"] == 0  # a new epoch is a full handshake (issue 7)


def test_query_from_an_older_epoch_does_not_cross_it(
    unbound: UnboundTls, pki: Pki, connects: ConnectCounter
) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), replace(LO, epoch=5))
        conn = up.connection
        with pytest.raises(UpstreamError) as info:
            await up.exchange(query("a.example."), replace(LO, epoch=4))
        assert info.value.kind == "epoch"
        assert up.connection is conn and conn is not None and conn.usable()
        await up.close()

    run(go)
    assert connects.count == 1


def test_tunnel_down_sends_nothing(unbound: UnboundTls, pki: Pki, connects: ConnectCounter) -> None:
    up = TlsUpstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        with pytest.raises(UpstreamError) as info:
            await up.exchange(query("a.example."), replace(LO, up=False, epoch=2))
        assert info.value.kind == "tunnel"
        assert up.connection is None
        # The tunnel is down, the upstream is not at fault.
        assert up.counters()["connect_failures"] == 0

    run(go)
    assert connects.count == 1


def test_in_flight_query_fails_at_once_on_epoch_change(pki: Pki) -> None:
    with ScriptedTlsServer(pki, lambda server, batch: []) as server:
        up = TlsUpstream(dot_cfg(SCRIPT_TLS_ADDR, server.port, pki.ca, timeout=5))

        async def go() -> None:
            stuck = asyncio.ensure_future(up.exchange(query("a.example."), LO))
            await asyncio.sleep(0.2)
            start = time.monotonic()
            await up.close()  # what the resolver does on a tunnel event
            with pytest.raises(UpstreamError) as info:
                await stuck
            assert info.value.kind == "epoch"
            assert time.monotonic() - start < 0.5

        run(go)


def test_server_restart_is_recovered(own_unbound: UnboundTls, pki: Pki) -> None:
    up = TlsUpstream(dot_cfg(own_unbound.addr, own_unbound.dot_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        await asyncio.to_thread(own_unbound.stop)
        await asyncio.to_thread(own_unbound.start)
        # The pooled connection is dead; the query is retried once on a fresh one.
        assert addresses(await up.exchange(query("a.example."), LO)) == ["192.0.2.1"]
        await up.close()

    run(go)
    assert up.counters()["handshakes"] == 2


def test_server_down_backs_off_then_recovers(own_unbound: UnboundTls, pki: Pki) -> None:
    up = TlsUpstream(dot_cfg(own_unbound.addr, own_unbound.dot_port, pki.ca), backoff_initial=0.3)

    async def go() -> None:
        await asyncio.to_thread(own_unbound.stop)
        with pytest.raises(UpstreamError) as info:
            await up.exchange(query("a.example."), LO)
        assert info.value.kind == "connect"
        assert "ECONNREFUSED" in info.value.message
        await asyncio.to_thread(own_unbound.start)
        with pytest.raises(UpstreamError):  # still backing off: fails at once
            await up.exchange(query("a.example."), LO)
        await asyncio.sleep(0.35)
        assert addresses(await up.exchange(query("a.example."), LO)) == ["192.0.2.1"]
        assert up.counters()["connect_failures"] == 1
        await up.close()

    run(go)


def test_factory_builds_dot(unbound: UnboundTls, pki: Pki) -> None:
    up = make_upstream(dot_cfg(unbound.addr, unbound.dot_port, pki.ca))
    # The factory gives the awaitable transport the callback form the resolver drives.
    assert isinstance(up, Awaited) and isinstance(up.inner, TlsUpstream)

    async def go() -> None:
        data = query("a.example.")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        up.exchange_cb(data, LO, functools.partial(settle_future, future), wire.question_key(data))
        assert addresses(await future) == ["192.0.2.1"]
        await up.close()

    run(go)
