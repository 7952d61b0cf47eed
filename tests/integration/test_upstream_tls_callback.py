"""DoT's callback path (issue 11): once a connection has answered, queries go out on it
with no task and no future each (`TlsUpstream.try_exchange_cb`, `DotConnection.request_cb`).
Real TLS servers on loopback: unbound, and a scripted one that misbehaves on cue."""

from __future__ import annotations

import asyncio

import dns.message
import pytest

from stubresolver.errors import UpstreamError
from stubresolver.upstream.base import Awaited, settle_future
from stubresolver.upstream.factory import make_upstream
from stubresolver.upstream.tls import TlsUpstream
from testkit.pki import Pki

from .test_upstream_tls import dot_cfg
from .tlsworld import (
    LO,
    SCRIPT_TLS_ADDR,
    ScriptedTlsServer,
    UnboundTls,
    addresses,
    answer_a,
    query,
    run,
)


def built(cfg_host: str, port: int, pki: Pki, timeout: float = 1.5) -> tuple[Awaited, TlsUpstream]:
    up = make_upstream(dot_cfg(cfg_host, port, pki.ca, timeout=timeout))
    assert isinstance(up, Awaited) and isinstance(up.inner, TlsUpstream)
    return up, up.inner


def ask(up: Awaited, raw: bytes) -> asyncio.Future[bytes]:
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    up.exchange_cb(raw, LO, lambda answer, error: settle_future(future, answer, error), b"")
    return future


def test_answered_connection_carries_pipelined_queries_without_a_task_each(
    unbound: UnboundTls, pki: Pki
) -> None:
    up, dot = built(unbound.addr, unbound.dot_port, pki)

    async def go() -> None:
        first = await ask(up, query("a.example."))  # connects: the task path
        assert addresses(first) == ["192.0.2.1"]
        reused = dot.counters()["reused"]
        tasks_before = len(asyncio.all_tasks())
        futures = [ask(up, query("b.example.", msg_id=i)) for i in range(50)]
        # One flush task for all 50 writes of this pass, not a task per query.
        assert len(asyncio.all_tasks()) - tasks_before <= 2
        answers = await asyncio.gather(*futures)
        assert [dns.message.from_wire(a).id for a in answers] == list(range(50))
        assert all(addresses(a) == ["192.0.2.2"] for a in answers)
        assert dot.counters()["reused"] == reused + 50
        assert dot.counters()["handshakes"] == 1
        await up.close()

    run(go)


def test_a_query_past_its_deadline_times_out_and_a_silent_server_loses_the_connection(
    pki: Pki,
) -> None:
    def first_only(server: ScriptedTlsServer, batch: list[bytes]) -> list[bytes]:
        return [answer_a(batch[0], "192.0.2.10")] if len(server.queries) == 1 else []

    with ScriptedTlsServer(pki, first_only) as server:
        up, dot = built(SCRIPT_TLS_ADDR, server.port, pki, timeout=0.4)

        async def go() -> None:
            assert addresses(await ask(up, query("one.example."))) == ["192.0.2.10"]
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(UpstreamError) as info:
                await ask(up, query("two.example."))
            assert info.value.kind == "timeout"
            assert 0.35 < loop.time() - start < 1.0  # the deadline, to within a sweep
            assert dot.connection is None  # nothing came back at all: presumed dead
            assert dot.counters()["open_connections"] == 0

        run(go)


def test_a_reused_connection_that_dies_under_a_query_is_retried_on_a_fresh_one(
    pki: Pki,
) -> None:
    def close_on_second(server: ScriptedTlsServer, batch: list[bytes]) -> list[bytes]:
        if server.connections == 1 and len(server.queries) == 2:
            raise ConnectionResetError  # the server closes this connection, unanswered
        return [answer_a(batch[0], "192.0.2.20")]

    with ScriptedTlsServer(pki, close_on_second) as server:
        up, dot = built(SCRIPT_TLS_ADDR, server.port, pki)

        async def go() -> None:
            assert addresses(await ask(up, query("one.example."))) == ["192.0.2.20"]
            assert addresses(await ask(up, query("two.example."))) == ["192.0.2.20"]
            assert dot.counters()["retries"] == 1
            assert server.connections == 2
            await up.close()

        run(go)


def test_a_withdrawn_query_is_never_answered_and_the_connection_stays(
    unbound: UnboundTls, pki: Pki
) -> None:
    up, dot = built(unbound.addr, unbound.dot_port, pki)

    async def go() -> None:
        await ask(up, query("a.example."))
        called: list[object] = []
        withdraw = up.exchange_cb(query("b.example."), LO, lambda a, e: called.append(a), b"")
        withdraw()
        assert addresses(await ask(up, query("b.example."))) == ["192.0.2.2"]
        await asyncio.sleep(0.1)
        assert not called
        assert dot.counters()["handshakes"] == 1
        await up.close()

    run(go)


def test_an_epoch_change_fails_callback_queries_at_once(unbound: UnboundTls, pki: Pki) -> None:
    up, dot = built(unbound.addr, unbound.dot_port, pki)

    async def go() -> None:
        await ask(up, query("a.example."))
        pending = ask(up, query("b.example."))
        await dot.close()  # what a tunnel change does to the pool
        with pytest.raises(UpstreamError) as info:
            await asyncio.wait_for(pending, 0.5)
        assert info.value.kind == "epoch"

    run(go)
