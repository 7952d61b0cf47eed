"""Plain UDP/TCP upstreams and netbind against real sockets on loopback (`lo` as tunnel)."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections import Counter
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from stubresolver import netbind, wire
from stubresolver.config import UpstreamConfig
from stubresolver.errors import ConfigError, UpstreamError
from stubresolver.tunnel import ProbeResult, TunnelMonitor
from stubresolver.tunnel_state import TunnelState
from stubresolver.upstream import plain
from stubresolver.upstream.base import Awaited, Exchanger, Upstream, settle_future
from stubresolver.upstream.factory import make_upstream
from stubresolver.upstream.plain import MAX_USES, POOL_SIZE, TcpUpstream, UdpUpstream
from testkit.ports import free_port
from testkit.unbound import Unbound

from .upstream_servers import BIG_TXT_COUNT, SCRIPT_ADDR, ScriptedUdpServer, run_unbound

LO = TunnelState(up=True, ifname="lo", ifindex=1, addresses=("127.0.0.1", "::1"), epoch=1)
LO_DOWN = TunnelState(up=False, ifname="lo", ifindex=1, addresses=("127.0.0.1", "::1"), epoch=2)
LO_V6_ONLY = TunnelState(up=True, ifname="lo", ifindex=1, addresses=("::1",), epoch=3)
NO_SUCH_DEVICE = TunnelState(
    up=True, ifname="nosuchdev0", ifindex=999, addresses=("127.0.0.1",), epoch=4
)
CALLER_ID = 0x1234


def run_exchange(up: Exchanger, raw: bytes, state: TunnelState) -> bytes:
    """One exchange in its own loop, closing the upstream's pooled sockets afterwards."""

    async def body() -> bytes:
        try:
            return await up.exchange(raw, state)
        finally:
            await up.close()

    return asyncio.run(body())


def question(raw: bytes) -> bytes:
    return wire.question_key(raw)


def run_callback(up: Upstream, raw: bytes, state: TunnelState) -> bytes:
    """One exchange through the callback form the resolver drives (`Upstream.exchange_cb`)."""

    async def body() -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        try:
            up.exchange_cb(raw, state, functools.partial(settle_future, future), question(raw))
            return await future
        finally:
            await up.close()

    return asyncio.run(body())


def cfg(scheme: str, host: str, port: int, timeout: float = 1.5) -> UpstreamConfig:
    return UpstreamConfig(
        url=f"{scheme}://{host}:{port}",
        scheme=scheme,
        host=host,
        port=port,
        auth_name=None,
        path=None,
        timeout=timeout,
    )


def query(name: str, rdtype: str = "A", *, edns: bool = False) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    q.id = CALLER_ID
    return q.to_wire()


def texts(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def answer_to(data: bytes, address: str, *, msg_id: int | None = None) -> bytes:
    """A response to ``data`` carrying one A record; optionally with another ID."""
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", address))
    if msg_id is not None:
        r.id = msg_id
    return r.to_wire()


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    with run_unbound(tmp_path_factory.mktemp("unbound")) as server:
        yield server


# --- against unbound -------------------------------------------------------------------


def test_udp_answer(unbound: Unbound) -> None:
    up = UdpUpstream(cfg("udp", unbound.addr, unbound.port))
    raw = run_exchange(up, query("a.example."), LO)
    msg = dns.message.from_wire(raw)
    assert msg.id == CALLER_ID
    assert msg.rcode() == dns.rcode.NOERROR
    assert texts(msg) == ["192.0.2.1"]
    assert not msg.flags & dns.flags.TC


def test_tcp_answer(unbound: Unbound) -> None:
    up = TcpUpstream(cfg("tcp", unbound.addr, unbound.port))
    raw = run_exchange(up, query("b.example."), LO)
    msg = dns.message.from_wire(raw)
    assert msg.id == CALLER_ID
    assert texts(msg) == ["192.0.2.2"]


def test_udp_uppercase_question_matches(unbound: Unbound) -> None:
    # Servers may echo the question in another case (0x20); matching is case-insensitive.
    up = UdpUpstream(cfg("udp", unbound.addr, unbound.port))
    msg = dns.message.from_wire(run_exchange(up, query("A.ExAmPlE."), LO))
    assert texts(msg) == ["192.0.2.1"]


def test_truncated_udp_falls_back_to_tcp(unbound: Unbound) -> None:
    q = query("big.example.", "TXT")
    # Precondition: plain UDP without EDNS really is truncated by this server.
    direct = dns.query.udp(dns.message.from_wire(q), unbound.addr, port=unbound.port, timeout=2)
    assert direct.flags & dns.flags.TC

    up = UdpUpstream(cfg("udp", unbound.addr, unbound.port))
    raw = run_exchange(up, q, LO)
    msg = dns.message.from_wire(raw)
    assert msg.id == CALLER_ID
    assert not msg.flags & dns.flags.TC
    assert len(raw) > 512
    assert len(texts(msg)) == BIG_TXT_COUNT


def test_factory_builds_plain_upstreams(unbound: Unbound) -> None:
    udp = make_upstream(cfg("udp", unbound.addr, unbound.port))
    assert isinstance(udp, UdpUpstream)  # the callback form itself: no adapter, no task
    tcp = make_upstream(cfg("tcp", unbound.addr, unbound.port))
    assert isinstance(tcp, Awaited) and isinstance(tcp.inner, TcpUpstream)
    for up in (udp, tcp):
        msg = dns.message.from_wire(run_callback(up, query("a.example."), LO))
        assert texts(msg) == ["192.0.2.1"]


@pytest.mark.parametrize("scheme", ["quic", ""])
def test_factory_rejects_other_schemes(scheme: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_upstream(cfg(scheme, "127.0.10.1", 853))
    assert info.value.path == "upstreams"


# --- anti-spoofing (scripted server) ---------------------------------------------------


def test_only_the_matching_answer_is_accepted() -> None:
    def spoof(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        real_id = dns.message.from_wire(data).id
        server.sock.sendto(answer_to(data, "6.6.6.1", msg_id=(real_id + 1) % 65536), peer)
        other_q = dns.message.make_query("b.example.", "A", use_edns=False)
        other_q.id = real_id
        server.sock.sendto(answer_to(other_q.to_wire(), "6.6.6.2"), peer)  # wrong question
        server.sock.sendto(data, peer)  # the query echoed back: QR=0, not a response
        server.other.sendto(answer_to(data, "6.6.6.3"), peer)  # wrong source port
        server.sock.sendto(answer_to(data, "192.0.2.77"), peer)

    with ScriptedUdpServer(script=spoof) as server:
        up = UdpUpstream(cfg("udp", server.addr, server.port))
        msg = dns.message.from_wire(run_exchange(up, query("a.example."), LO))
    assert msg.id == CALLER_ID
    assert texts(msg) == ["192.0.2.77"]


def test_spoofed_answers_only_end_in_timeout() -> None:
    def spoof(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        real_id = dns.message.from_wire(data).id
        server.sock.sendto(answer_to(data, "6.6.6.1", msg_id=(real_id + 1) % 65536), peer)
        server.other.sendto(answer_to(data, "6.6.6.3"), peer)

    with ScriptedUdpServer(script=spoof) as server:
        up = UdpUpstream(cfg("udp", server.addr, server.port, timeout=0.4))
        with pytest.raises(UpstreamError) as info:
            run_exchange(up, query("a.example."), LO)
    assert info.value.kind == "timeout"


def test_wire_id_is_random_and_source_is_tunnel_address() -> None:
    peers: list[tuple[str, int]] = []

    def echo(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        peers.append(peer)
        server.sock.sendto(answer_to(data, "192.0.2.9"), peer)

    with ScriptedUdpServer(script=echo) as server:
        up = UdpUpstream(cfg("udp", server.addr, server.port))
        for _ in range(8):
            run_exchange(up, query("a.example."), LO)
        wire_ids = {dns.message.from_wire(d).id for d in server.received}
    assert len(server.received) == 8
    assert wire_ids != {CALLER_ID}
    assert len(wire_ids) > 1
    assert {host for host, _ in peers} == {"127.0.0.1"}
    assert len({port for _, port in peers}) > 1  # a fresh random source port per query


def test_udp_timeout_when_server_is_silent() -> None:
    with ScriptedUdpServer() as server:
        up = UdpUpstream(cfg("udp", server.addr, server.port, timeout=0.3))
        start = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            run_exchange(up, query("a.example."), LO)
        elapsed = time.monotonic() - start
    assert info.value.kind == "timeout"
    assert 0.25 <= elapsed < 0.8
    assert len(server.received) == 1


def test_tcp_timeout_when_server_never_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((SCRIPT_ADDR, 0))
        listener.listen(4)  # the kernel completes the handshake; nobody ever answers
        up = TcpUpstream(cfg("tcp", SCRIPT_ADDR, listener.getsockname()[1], timeout=0.3))
        start = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            run_exchange(up, query("a.example."), LO)
        elapsed = time.monotonic() - start
    assert info.value.kind == "timeout"
    assert 0.25 <= elapsed < 0.8


def test_udp_port_unreachable_is_a_connect_error() -> None:
    port = free_port(SCRIPT_ADDR)
    up = UdpUpstream(cfg("udp", SCRIPT_ADDR, port, timeout=1.0))
    start = time.monotonic()
    with pytest.raises(UpstreamError) as info:
        run_exchange(up, query("a.example."), LO)
    assert info.value.kind == "connect"
    assert "ECONNREFUSED" in info.value.message
    assert time.monotonic() - start < 0.5  # ICMP unreachable, not the deadline


def test_tcp_refused_is_a_connect_error() -> None:
    up = TcpUpstream(cfg("tcp", SCRIPT_ADDR, free_port(SCRIPT_ADDR)))
    with pytest.raises(UpstreamError) as info:
        run_exchange(up, query("a.example."), LO)
    assert info.value.kind == "connect"
    assert "ECONNREFUSED" in info.value.message


# --- tunnel down: nothing is sent ------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "scheme"),
    [(LO_DOWN, "udp"), (LO_DOWN, "tcp"), (LO_V6_ONLY, "udp"), (LO_V6_ONLY, "tcp")],
)
def test_down_or_no_address_sends_nothing(state: TunnelState, scheme: str) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind((SCRIPT_ADDR, 0))
        port = udp.getsockname()[1]
        tcp.bind((SCRIPT_ADDR, port))
        tcp.listen(4)
        up = make_upstream(cfg(scheme, SCRIPT_ADDR, port))
        with pytest.raises(UpstreamError) as info:
            run_callback(up, query("a.example."), state)
        assert info.value.kind == "tunnel"
        udp.settimeout(0.2)
        with pytest.raises(TimeoutError):
            udp.recvfrom(65535)
        tcp.settimeout(0.2)
        with pytest.raises(TimeoutError):
            tcp.accept()


# --- cancellation closes what it opened ------------------------------------------------


def test_udp_cancellation_leaves_no_waiter_and_close_closes_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[socket.socket] = []
    real = netbind.udp_socket

    def spy(
        state: TunnelState, dest: tuple[str, int], *, upstream: str | None = None
    ) -> socket.socket:
        sock = real(state, dest, upstream=upstream)
        made.append(sock)
        return sock

    monkeypatch.setattr(netbind, "udp_socket", spy)

    async def body(port: int) -> None:
        up = UdpUpstream(cfg("udp", SCRIPT_ADDR, port, timeout=5))
        task = asyncio.create_task(up.exchange(query("a.example."), LO))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The socket stays for later queries, with nothing left waiting on it...
        assert len(made) == 1
        assert made[0].fileno() != -1
        assert not any(p.pending for p in up.pool._socks)
        # ...and closing the upstream (as every tunnel epoch does) closes it.
        await up.close()
        assert made[0].fileno() == -1

    with ScriptedUdpServer() as server:
        asyncio.run(body(server.port))
    assert len(made) == 1
    assert made[0].fileno() == -1


def test_tcp_cancellation_closes_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[socket.socket] = []
    real = netbind.tcp_connect

    async def spy(
        state: TunnelState, dest: tuple[str, int], timeout: float, *, upstream: str | None = None
    ) -> socket.socket:
        sock = await real(state, dest, timeout, upstream=upstream)
        made.append(sock)
        return sock

    monkeypatch.setattr(netbind, "tcp_connect", spy)

    async def body(port: int) -> None:
        up = TcpUpstream(cfg("tcp", SCRIPT_ADDR, port, timeout=5))
        task = asyncio.create_task(up.exchange(query("a.example."), LO))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((SCRIPT_ADDR, 0))
        listener.listen(4)
        asyncio.run(body(listener.getsockname()[1]))
    assert len(made) == 1
    assert made[0].fileno() == -1


# --- netbind ---------------------------------------------------------------------------


def bound_device(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
    return raw.split(b"\0", 1)[0].decode()


def test_udp_socket_is_device_and_address_bound() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((SCRIPT_ADDR, 0))
        dest = (SCRIPT_ADDR, server.getsockname()[1])
        sock = netbind.udp_socket(LO, dest)
        try:
            assert bound_device(sock) == "lo"
            assert sock.getsockname()[0] == "127.0.0.1"
            assert sock.getsockname()[1] != 0
            assert sock.getpeername() == dest
            assert not sock.getblocking()
        finally:
            sock.close()


def test_udp_socket_ipv6_uses_the_ipv6_tunnel_address() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as server:
        server.bind(("::1", 0))
        port = server.getsockname()[1]
        sock = netbind.udp_socket(LO, ("::1", port))
        try:
            assert sock.family == socket.AF_INET6
            assert bound_device(sock) == "lo"
            assert sock.getsockname()[0] == "::1"
            sock.send(b"hello")
            server.settimeout(1)
            data, peer = server.recvfrom(100)
            assert data == b"hello"
            assert peer[:2] == sock.getsockname()[:2]
        finally:
            sock.close()


def test_tcp_connect_sets_options_before_connecting() -> None:
    async def body(dest: tuple[str, int]) -> None:
        sock = await netbind.tcp_connect(LO, dest, 1.5)
        try:
            assert bound_device(sock) == "lo"
            assert sock.getsockname()[0] == "127.0.0.1"
            assert sock.getpeername() == dest
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1500
            assert not sock.getblocking()
        finally:
            sock.close()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((SCRIPT_ADDR, 0))
        listener.listen(4)
        asyncio.run(body((SCRIPT_ADDR, listener.getsockname()[1])))


def test_missing_device_is_a_connect_error() -> None:
    with pytest.raises(UpstreamError) as info:
        netbind.udp_socket(NO_SUCH_DEVICE, (SCRIPT_ADDR, 53))
    assert info.value.kind == "connect"
    assert "ENODEV" in info.value.message

    with pytest.raises(UpstreamError) as info:
        asyncio.run(netbind.tcp_connect(NO_SUCH_DEVICE, (SCRIPT_ADDR, 53), 1.0))
    assert info.value.kind == "connect"
    assert "ENODEV" in info.value.message


def test_address_not_on_device_is_a_connect_error() -> None:
    # 192.0.2.200 is on no interface: bind fails EADDRNOTAVAIL, nothing is sent.
    stray = TunnelState(up=True, ifname="lo", ifindex=1, addresses=("192.0.2.200",), epoch=5)
    with pytest.raises(UpstreamError) as info:
        netbind.udp_socket(stray, (SCRIPT_ADDR, 53))
    assert info.value.kind == "connect"
    assert "EADDRNOTAVAIL" in info.value.message


@pytest.mark.parametrize("state", [LO_DOWN, LO_V6_ONLY])
def test_netbind_refuses_down_or_missing_family(state: TunnelState) -> None:
    with pytest.raises(UpstreamError) as info:
        netbind.udp_socket(state, (SCRIPT_ADDR, 53))
    assert info.value.kind == "tunnel"
    with pytest.raises(UpstreamError) as info:
        asyncio.run(netbind.tcp_connect(state, (SCRIPT_ADDR, 53), 1.0))
    assert info.value.kind == "tunnel"


# --- the UDP socket pool (issue 4) ----------------------------------------------------------


def test_pool_spreads_queries_over_random_ports_and_replaces_sockets_on_epoch() -> None:
    peers: list[tuple[str, int]] = []

    def echo(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        peers.append(peer)
        server.sock.sendto(answer_to(data, "192.0.2.9"), peer)

    next_epoch = TunnelState(up=True, ifname="lo", ifindex=1, addresses=LO.addresses, epoch=9)

    async def body(port: int) -> set[int]:
        up = UdpUpstream(cfg("udp", SCRIPT_ADDR, port))
        try:
            for _ in range(64):
                await up.exchange(query("a.example."), LO)
            first = {p for _, p in peers}
            assert up.pool.open_sockets <= POOL_SIZE
            old = [p.sock for p in up.pool._socks]
            for _ in range(16):
                await up.exchange(query("a.example."), next_epoch)
            # Every socket of the old epoch is closed, and the pool holds only new sockets.
            # (Not "new port numbers": the kernel may hand a just-closed port out again.)
            assert all(sock.fileno() == -1 for sock in old)
            new = [p.sock for p in up.pool._socks]
            assert new and not {id(s) for s in new} & {id(s) for s in old}
            assert all(sock.fileno() != -1 for sock in new)
            return first
        finally:
            await up.close()

    with ScriptedUdpServer(script=echo) as server:
        first = asyncio.run(body(server.port))
    assert len(first) >= 4  # 64 queries over a pool of random ports


def test_pool_ignores_a_late_answer_to_an_earlier_query() -> None:
    held: list[tuple[bytes, tuple[str, int]]] = []

    def late(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        # Answer the previous query now (late), then this one.
        for old_data, old_peer in held:
            server.sock.sendto(answer_to(old_data, "6.6.6.6"), old_peer)
        held.clear()
        if dns.message.from_wire(data).question[0].name.to_text() == "slow.example.":
            held.append((data, peer))
            return
        server.sock.sendto(answer_to(data, "192.0.2.9"), peer)

    async def body(port: int) -> list[str]:
        up = UdpUpstream(cfg("udp", SCRIPT_ADDR, port, timeout=0.3))
        up.pool.size = 1  # force both queries onto one socket
        try:
            with pytest.raises(UpstreamError):
                await up.exchange(query("slow.example."), LO)
            raw = await up.exchange(query("a.example."), LO)
            return texts(dns.message.from_wire(raw))
        finally:
            await up.close()

    with ScriptedUdpServer(script=late) as server:
        assert asyncio.run(body(server.port)) == ["192.0.2.9"]


def test_the_tcp_retry_after_tc_is_withdrawn_with_its_flight() -> None:
    """Issue 7: the TCP retry belongs to the exchange; withdrawing it closes the connection
    at once, and ``done`` is never called."""

    def truncated(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        r = dns.message.make_response(dns.message.from_wire(data))
        r.flags |= dns.flags.TC
        server.sock.sendto(r.to_wire(), peer)

    with ScriptedUdpServer(script=truncated) as server, socket.socket() as tcp:
        tcp.bind((server.addr, server.port))
        tcp.listen(4)
        tcp.settimeout(5)
        up = UdpUpstream(cfg("udp", server.addr, server.port, timeout=10.0))
        calls: list[object] = []

        async def body() -> bytes:
            loop = asyncio.get_running_loop()
            raw = query("tc.example.")
            withdraw = up.exchange_cb(
                raw, LO, lambda m, e: calls.append(m or e), wire.question_key(raw)
            )
            conn, _ = await loop.run_in_executor(None, tcp.accept)  # the retry connected
            with conn:
                conn.settimeout(5)
                withdraw()
                # Our side closes: the held connection reads EOF long before the 10 s deadline.
                started = loop.time()
                tail = await loop.run_in_executor(None, _read_until_eof, conn)
                waited = loop.time() - started
            await asyncio.sleep(0.05)
            await up.close()
            assert waited < 2.0
            return tail

        asyncio.run(body())
    assert calls == []


def _read_until_eof(conn: socket.socket) -> bytes:
    data = b""
    while chunk := conn.recv(65535):
        data += chunk
    return data


def test_netbind_refuses_a_state_whose_epoch_the_monitor_has_left() -> None:
    """Issue 7: a socket is made only for the monitor's current epoch."""
    results = [
        ProbeResult(up=True, ifname="lo", ifindex=1, addresses=("127.0.0.1",)),
        ProbeResult(up=True, ifname="lo", ifindex=1, addresses=("127.0.0.1", "::1")),
    ]
    monitor = TunnelMonitor(["lo"], probe=lambda patterns: results[0])
    first = monitor.refresh()
    assert first.up and not first.stale
    netbind.udp_socket(first, ("127.0.0.1", 53)).close()  # current: allowed
    results.pop(0)
    second = monitor.refresh()
    assert second.epoch == first.epoch + 1
    assert first.stale and not second.stale
    with pytest.raises(UpstreamError) as info:
        netbind.udp_socket(first, ("127.0.0.1", 53))
    assert info.value.kind == "epoch"

    async def connect_stale() -> None:
        await netbind.tcp_connect(first, ("127.0.0.1", 53), 1.0)

    with pytest.raises(UpstreamError) as info:
        asyncio.run(connect_stale())
    assert info.value.kind == "epoch"
    netbind.udp_socket(second, ("127.0.0.1", 53)).close()


def test_source_ports_are_spread_and_short_lived_rfc5452(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 7: 60 consecutive queries used 15 distinct source ports. Now they use 60, and
    over 400 queries no socket carries more than MAX_USES of them; spent sockets close."""
    ports: list[int] = []
    opened: list[socket.socket] = []  # every socket the pool made, kept so ids stay unique
    carried: list[int] = []  # per query: which socket sent it

    real_udp_socket = netbind.udp_socket

    def tracked(*args: object, **kwargs: object) -> socket.socket:
        sock = real_udp_socket(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(sock)
        return sock

    monkeypatch.setattr(netbind, "udp_socket", tracked)

    def record(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        ports.append(peer[1])
        # The sender is waiting for this answer, so it is open; no two open sockets share a
        # port. (A port number alone is not a socket: the kernel may hand a closed one out.)
        (sender,) = [s for s in opened if s.fileno() != -1 and s.getsockname()[1] == peer[1]]
        carried.append(id(sender))
        r = dns.message.make_response(dns.message.from_wire(data))
        server.sock.sendto(r.to_wire(), peer)

    with ScriptedUdpServer(script=record) as server:
        up = UdpUpstream(cfg("udp", server.addr, server.port))

        async def body() -> int:
            for i in range(400):
                await up.exchange(query(f"n{i}.example."), LO)
            left = up.pool.open_sockets
            await up.close()
            return left

        left_open = asyncio.run(body())
    assert len(ports) == 400
    assert len(set(ports[:60])) >= 58  # the kernel may hand a closed port out again, rarely
    assert max(Counter(carried).values()) <= MAX_USES
    assert len(set(carried)) >= 400 // MAX_USES
    assert left_open <= POOL_SIZE  # spent sockets were closed, not kept


def test_a_socket_leaves_the_rotation_after_max_age(monkeypatch: pytest.MonkeyPatch) -> None:
    ports: list[int] = []

    def record(server: ScriptedUdpServer, data: bytes, peer: tuple[str, int]) -> None:
        ports.append(peer[1])
        r = dns.message.make_response(dns.message.from_wire(data))
        server.sock.sendto(r.to_wire(), peer)

    monkeypatch.setattr(plain, "MAX_AGE", 0.2)
    with ScriptedUdpServer(script=record) as server:
        up = UdpUpstream(cfg("udp", server.addr, server.port))
        up.pool.size = 1  # one socket in rotation: the second query must reuse it

        async def body() -> None:
            await up.exchange(query("a.example."), LO)
            await up.exchange(query("b.example."), LO)  # the same young socket
            await asyncio.sleep(0.3)
            await up.exchange(query("c.example."), LO)  # too old: a new one
            await up.close()

        asyncio.run(body())
    assert ports[0] == ports[1] != ports[2]
