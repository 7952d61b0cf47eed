"""The UDP listener with recvmmsg/sendmmsg (server.udp_batch, mmsg.py) and without: a burst
from many client sockets at once, cache hits answered in the same batch as forwarded and
locally answered queries, each answer to the socket that asked with its own ID and
question; a datagram bigger than any slot gets FORMERR like any malformed one, the next one is
answered; refused
clients in a batch get REFUSED. The real daemon, a real unbound, real sockets."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import dns.message
import dns.rcode
import pytest

from testkit.ports import free_port
from testkit.unbound import Unbound

from .stub_process import StubProcess, run_stub, write_config
from .upstream_servers import run_unbound

STUB_ADDR = "127.0.20.40"
CLIENTS = 32
ROUNDS = 8  # 32 x 8 x 3 = 768 queries, sent as fast as the sockets take them


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    with run_unbound(tmp_path_factory.mktemp("unbound")) as server:
        yield server


@pytest.fixture(scope="module", params=[True, False], ids=["mmsg", "plain"])
def stub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, unbound: Unbound
) -> Iterator[StubProcess]:
    tmp = tmp_path_factory.mktemp("stub")
    port = free_port(STUB_ADDR)
    config = {
        "listen": [f"{STUB_ADDR}:{port}"],
        "tunnel": {"interfaces": ["lo"]},
        "upstreams": [f"udp://{unbound.addr}:{unbound.port}"],
        "control_socket": str(tmp / "control.sock"),
        "server": {"udp_batch": request.param, "allow": [f"{STUB_ADDR}/32", "127.0.20.41/32"]},
    }
    with run_stub(write_config(tmp / "config.yaml", config), STUB_ADDR, port) as proc:
        yield proc
    assert "Traceback" not in proc.stderr


def _burst(
    stub: StubProcess, source: str
) -> tuple[dict[tuple[int, int], dns.message.Message], int]:
    socks = []
    for _ in range(CLIENTS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        socks.append(sock)
    sent: dict[tuple[int, int], str] = {}
    try:
        for r in range(ROUNDS):
            for c, sock in enumerate(socks):
                for k, name in enumerate(("a.example.", f"r{r}c{c}.example.", "localhost.")):
                    msg = dns.message.make_query(name, "A")
                    msg.id = (r * CLIENTS + c) * 3 + k
                    sock.sendto(msg.to_wire(), (stub.host, stub.port))
                    sent[(c, msg.id)] = name
        got: dict[tuple[int, int], dns.message.Message] = {}
        deadline = time.monotonic() + 20
        while len(got) < len(sent) and time.monotonic() < deadline:
            ready, _, _ = select.select(socks, [], [], 0.5)
            for sock in ready:
                c = socks.index(sock)
                while True:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    reply = dns.message.from_wire(data)
                    key = (c, reply.id)
                    assert key in sent, f"an answer reached the wrong socket: {key}"
                    assert str(reply.question[0].name) == sent[key]
                    got[key] = reply
        return got, len(sent)
    finally:
        for sock in socks:
            sock.close()


def test_a_burst_gets_every_answer_at_its_own_socket(stub: StubProcess) -> None:
    got, total = _burst(stub, STUB_ADDR)
    # UDP may drop under a burst; the kernel queue holds this much on loopback.
    assert len(got) >= total * 0.95, (len(got), total)
    for (_c, msg_id), reply in got.items():
        kind = msg_id % 3
        if kind == 0:
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer, reply
        elif kind == 1:
            assert reply.rcode() == dns.rcode.NXDOMAIN  # forwarded: the zone has no such name
        else:
            assert [r.to_text() for r in reply.answer[0]] == ["127.0.0.1"]


def test_refused_clients_in_a_batch(stub: StubProcess) -> None:
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.20.42", 0))
    stranger.settimeout(3)
    try:
        for i in range(5):
            stranger.sendto(dns.message.make_query("a.example.", "A", id=i).to_wire(),
                            (stub.host, stub.port))  # fmt: skip
        codes = {dns.message.from_wire(stranger.recv(4096)).rcode() for _ in range(5)}
    finally:
        stranger.close()
    assert codes == {dns.rcode.REFUSED}


def test_an_oversized_datagram_gets_formerr_and_the_next_one_an_answer(
    stub: StubProcess,
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((STUB_ADDR, 0))
    sock.settimeout(3)
    try:
        sock.sendto(b"\x12\x34" + b"\x00" * 9000, (stub.host, stub.port))
        sock.sendto(dns.message.make_query("localhost.", "A", id=7).to_wire(),
                    (stub.host, stub.port))  # fmt: skip
        first = sock.recv(4096)
        reply = dns.message.from_wire(sock.recv(4096))
    finally:
        sock.close()
    assert first[:2] == b"\x12\x34" and first[3] & 0x0F == dns.rcode.FORMERR
    assert reply.id == 7 and reply.rcode() == dns.rcode.NOERROR
