"""Client TCP cannot exhaust the stub (issue 7): output backpressure and slowloris.

The real `stubresolver run` with unbound on loopback as its upstream (as in test_server.py).
A client that pipelines queries without reading its answers must not make the stub buffer
them without bound; connections that trickle bytes must neither keep their slots forever nor
lock out a new client.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from testkit.ports import free_port
from testkit.unbound import Unbound

from .stub_process import StubProcess, run_stub, write_config
from .upstream_servers import run_unbound

# 127.0.60.0/24 belongs to the TCP-bounds tests (unique loopback ranges per test module).
STUB_ADDR = "127.0.60.2"


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Unbound]:
    with run_unbound(tmp_path_factory.mktemp("unbound")) as server:
        yield server


def start(
    tmp: Path, upstream: Unbound, **server: object
) -> contextlib.AbstractContextManager[StubProcess]:
    port = free_port(STUB_ADDR)
    config = {
        "listen": [f"{STUB_ADDR}:{port}"],
        "tunnel": {"interfaces": ["lo"]},
        "upstreams": [f"udp://{upstream.addr}:{upstream.port}"],
        "control_socket": "",
        "server": server,
    }
    return run_stub(write_config(tmp / "config.yaml", config), STUB_ADDR, port)


def rss_kib(stub: StubProcess) -> int:
    for line in Path(f"/proc/{stub.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def test_pipelining_without_reading_keeps_memory_bounded(tmp_path: Path, unbound: Unbound) -> None:
    with start(tmp_path, unbound) as stub:
        warm = dns.message.make_query("a.example", "A", use_edns=False)
        assert dns.query.tcp(warm, stub.host, port=stub.port, timeout=3).answer
        before = rss_kib(stub)
        # 10^6 cache hits in one stream, never reading an answer (about 60 MB of answers).
        batch = frame(warm.to_wire()) * 1000
        sent = 0
        with socket.create_connection((stub.host, stub.port), timeout=3) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            deadline = time.monotonic() + 40
            try:
                while sent < 1_000_000 and time.monotonic() < deadline:
                    sock.sendall(batch)  # blocks, then times out, once the stub stops reading
                    sent += 1000
            except TimeoutError:
                pass
            time.sleep(1.0)  # let the stub work through what it has read
            grown = rss_kib(stub) - before
            assert stub.alive()
            # Other clients are still served while that one is stuck.
            assert dns.query.udp(warm, stub.host, port=stub.port, timeout=3).answer
        assert grown < 16 * 1024, f"RSS grew by {grown} KiB after {sent} pipelined queries"
        assert sent < 1_000_000, "the stub kept reading although nothing was read back"


def test_trickling_connections_neither_stay_forever_nor_lock_out_a_new_client(
    tmp_path: Path, unbound: Unbound
) -> None:
    # The default cap (256), a short frame deadline so the test stays short.
    with start(tmp_path, unbound, tcp_frame_timeout=3.0) as stub:
        slow: list[socket.socket] = []
        try:
            for _ in range(256):
                sock = socket.create_connection((stub.host, stub.port), timeout=3)
                sock.sendall(b"\x00")  # the first byte of a length prefix, then nothing more
                slow.append(sock)
            # A new client gets in and is answered, although 256 slots are taken.
            msg = dns.message.make_query("a.example", "A")
            reply = dns.query.tcp(msg, stub.host, port=stub.port, timeout=5)
            assert reply.answer
            # Trickling one byte a second does not count as activity: the frame deadline
            # closes the connection although bytes keep coming.
            trickler = slow[-1]
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 15 and not closed:
                try:
                    trickler.sendall(b"\x10")
                    trickler.settimeout(1.0)
                    closed = trickler.recv(1) == b""
                except TimeoutError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
            assert closed, "a connection that never completes a query was kept open"
            assert time.monotonic() - started < 12
        finally:
            for sock in slow:
                sock.close()
        assert stub.alive()
