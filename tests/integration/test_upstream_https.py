"""DNS-over-HTTPS upstream (HTTP/2 via h2 over our own TLS stream) against unbound's
``https-port`` on loopback, with a certificate from a CA the tests make."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from stubresolver import wire
from stubresolver.config import UpstreamConfig
from stubresolver.errors import UpstreamError
from stubresolver.upstream.base import Awaited, settle_future
from stubresolver.upstream.factory import make_upstream
from stubresolver.upstream.https import HttpsUpstream
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
    query,
    run,
)


def doh_cfg(
    host: str, port: int, ca: Path | None, *, auth_name: str | None = AUTH_NAME,
    path: str = "/dns-query", pins: tuple[str, ...] = (), timeout: float = 1.5,
) -> UpstreamConfig:  # fmt: skip
    return UpstreamConfig(
        url=f"https://{host}:{port}{path}#{auth_name}",
        scheme="https",
        host=host,
        port=port,
        auth_name=auth_name,
        path=path,
        timeout=timeout,
        ca_file=str(ca) if ca else None,
        spki_pins=pins,
    )


def test_answer_over_doh(unbound: UnboundTls, pki: Pki, connects: ConnectCounter) -> None:
    before = unbound.stats().get("num.query.https", 0)
    up = HttpsUpstream(doh_cfg(unbound.addr, unbound.doh_port, pki.ca, pins=(pki.pin(),)))
    assert up.authority == f"{AUTH_NAME}:{unbound.doh_port}".encode()

    async def go() -> None:
        raw = await up.exchange(query("a.example."), LO)
        msg = dns.message.from_wire(raw)
        assert msg.id == CALLER_ID  # ID 0 on the wire, the caller's ID restored
        assert msg.rcode() == dns.rcode.NOERROR
        assert msg.edns == -1
        assert addresses(raw) == ["192.0.2.1"]
        assert (
            dns.message.from_wire(await up.exchange(query("b.example.", edns=True), LO)).edns == 0
        )
        await up.close()

    run(go)
    assert connects.count == 1
    assert unbound.stats()["num.query.https"] - before == 2


def test_streams_are_multiplexed_on_one_connection(
    unbound: UnboundTls, pki: Pki, connects: ConnectCounter
) -> None:
    up = HttpsUpstream(doh_cfg(unbound.addr, unbound.doh_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        conn = up.connection
        names = ["a.example.", "b.example."] * 15
        raws = await asyncio.gather(
            *(up.exchange(query(n, msg_id=100 + i), LO) for i, n in enumerate(names))
        )
        for i, (name, raw) in enumerate(zip(names, raws, strict=True)):
            assert dns.message.from_wire(raw).id == 100 + i
            assert addresses(raw) == (["192.0.2.1"] if name == "a.example." else ["192.0.2.2"])
        assert up.connection is conn
        await up.close()

    run(go)
    assert connects.count == 1
    assert up.counters()["handshakes"] == 1


def test_wrong_path_is_a_protocol_error(unbound: UnboundTls, pki: Pki) -> None:
    up = HttpsUpstream(doh_cfg(unbound.addr, unbound.doh_port, pki.ca, path="/nope"))

    async def go() -> None:
        with pytest.raises(UpstreamError) as info:
            await up.exchange(query("a.example."), LO)
        assert info.value.kind == "protocol"
        assert "HTTP status" in info.value.message
        await up.close()

    run(go)


def expect_tls_error(up: HttpsUpstream, *needles: str) -> None:
    async def go() -> None:
        for _ in range(2):
            with pytest.raises(UpstreamError) as info:
                await up.exchange(query("a.example."), LO)
            assert info.value.kind == "tls"
            for needle in needles:
                assert needle in info.value.message
        await up.close()

    run(go)
    assert up.counters()["connect_failures"] >= 1


def test_wrong_auth_name_fails(unbound: UnboundTls, pki: Pki) -> None:
    cfg = doh_cfg(unbound.addr, unbound.doh_port, pki.ca, auth_name="dns.wrong.example")
    expect_tls_error(HttpsUpstream(cfg), "certificate verify failed")


def test_untrusted_ca_fails(unbound: UnboundTls, pki: Pki) -> None:
    expect_tls_error(HttpsUpstream(doh_cfg(unbound.addr, unbound.doh_port, pki.other_ca)))


def test_wrong_pin_fails(unbound: UnboundTls, pki: Pki) -> None:
    cfg = doh_cfg(unbound.addr, unbound.doh_port, pki.ca, pins=(pki.pin(pki.other_key),))
    expect_tls_error(HttpsUpstream(cfg), "SPKI pin mismatch")


def test_server_without_h2_is_refused(pki: Pki) -> None:
    # A TLS server that negotiates no ALPN: no HTTP/2, and there is no HTTP/1.1 fallback.
    with ScriptedTlsServer(pki, lambda server, batch: []) as server:
        up = HttpsUpstream(doh_cfg(SCRIPT_TLS_ADDR, server.port, pki.ca))
        expect_tls_error(up, "ALPN h2")
        assert server.queries == []


def test_epoch_change_rebuilds_the_pool(
    unbound: UnboundTls, pki: Pki, connects: ConnectCounter
) -> None:
    up = HttpsUpstream(doh_cfg(unbound.addr, unbound.doh_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        old = up.connection
        await up.exchange(query("a.example."), replace(LO, epoch=7))
        assert up.connection is not old
        assert old is not None and old.error is not None and old.error.kind == "epoch"
        await up.close()

    run(go)
    assert connects.count == 2


def test_server_restart_is_recovered(own_unbound: UnboundTls, pki: Pki) -> None:
    up = HttpsUpstream(doh_cfg(own_unbound.addr, own_unbound.doh_port, pki.ca))

    async def go() -> None:
        await up.exchange(query("a.example."), LO)
        await asyncio.to_thread(own_unbound.stop)
        await asyncio.to_thread(own_unbound.start)
        assert addresses(await up.exchange(query("b.example."), LO)) == ["192.0.2.2"]
        await up.close()

    run(go)
    assert up.counters()["handshakes"] == 2


def test_factory_builds_doh(unbound: UnboundTls, pki: Pki) -> None:
    up = make_upstream(doh_cfg(unbound.addr, unbound.doh_port, pki.ca))
    # The factory gives the awaitable transport the callback form the resolver drives.
    assert isinstance(up, Awaited) and isinstance(up.inner, HttpsUpstream)

    async def go() -> None:
        data = query("b.example.")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        up.exchange_cb(data, LO, functools.partial(settle_future, future), wire.question_key(data))
        assert addresses(await future) == ["192.0.2.2"]
        await up.close()

    run(go)
