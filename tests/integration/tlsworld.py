"""Real TLS servers for the DoT/DoH tests: a test CA made with the openssl CLI, unbound
serving DoT (``tls-port``) and DoH (``https-port``) on 127.0.30.1, and a scripted DoT server
of our own that answers pipelined queries in the order a test wants."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rrset
import pytest

import testkit.pki
from stubresolver import netbind
from stubresolver.tunnel_state import TunnelState
from testkit.pki import Pki
from testkit.ports import free_ports
from testkit.processes import Process
from testkit.unbound import loopback_tls_config, start_unbound, wait_listening, write_config

# 127.0.30.0/24 belongs to the encrypted-upstream tests (contracts: unique loopback ranges).
TLS_ADDR = "127.0.30.1"
SCRIPT_TLS_ADDR = "127.0.30.2"
AUTH_NAME = "dns.test.example"


def make_pki(tmp: Path) -> Pki:
    """The test PKI for the loopback DoT/DoH servers (testkit/pki.py makes it)."""
    return testkit.pki.make_pki(tmp, AUTH_NAME, (TLS_ADDR, SCRIPT_TLS_ADDR))


@dataclass
class UnboundTls:
    """unbound serving DoT on ``dot_port`` and DoH on ``doh_port``; restartable."""

    dir: Path
    pki: Pki
    addr: str = TLS_ADDR
    dot_port: int = 0
    doh_port: int = 0
    proc: Process | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "unbound.conf"

    def write_conf(self) -> None:
        self.dot_port, self.doh_port = free_ports(self.addr, 2)
        write_config(
            self.conf,
            loopback_tls_config(
                self.addr, self.dot_port, self.doh_port, self.dir, self.pki.key, self.pki.cert
            ),
        )

    def start(self) -> None:
        self.proc = start_unbound("unbound-tls", self.conf, self.dir / "unbound-stderr.log")
        wait_listening(
            self.proc, self.addr, (self.dot_port, self.doh_port), self.dir / "unbound.log"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(grace=5)

    def stats(self) -> dict[str, float]:
        """``unbound-control stats_noreset`` as a mapping (num.query.tls, ...)."""
        out = subprocess.run(
            ["unbound-control", "-c", str(self.conf), "stats_noreset"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
        values: dict[str, float] = {}
        for line in out.splitlines():
            name, _, value = line.partition("=")
            try:
                values[name] = float(value)
            except ValueError:
                continue
        return values


@contextmanager
def run_unbound_tls(tmp: Path, pki: Pki) -> Iterator[UnboundTls]:
    server = UnboundTls(dir=tmp, pki=pki)
    server.write_conf()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def answer_a(query: bytes, address: str) -> bytes:
    """A response to ``query`` with one A record for its name."""
    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", address))
    return r.to_wire()


Handler = Callable[["ScriptedTlsServer", list[bytes]], list[bytes]]


@dataclass
class ScriptedTlsServer:
    """A DoT server of our own: collects ``batch`` queries from a connection, then sends the
    answers ``handler`` returns for that batch (in the handler's order).

    Counts connections and records every query as received (padding included).
    """

    pki: Pki
    handler: Handler
    batch: int = 1
    addr: str = SCRIPT_TLS_ADDR
    connections: int = 0
    queries: list[bytes] = field(default_factory=list)
    _listener: socket.socket = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(self.pki.cert), str(self.pki.key))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.addr, 0))
        self._listener.listen(16)
        self._listener.settimeout(0.05)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> ScriptedTlsServer:
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(5)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with self._ctx.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(0.1)
                buf = b""
                pending: list[bytes] = []
                while not self._stop.is_set():
                    try:
                        data = conn.recv(65535)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    buf += data
                    while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                        length = struct.unpack("!H", buf[:2])[0]
                        msg, buf = buf[2 : 2 + length], buf[2 + length :]
                        self.queries.append(msg)
                        pending.append(msg)
                    if len(pending) >= self.batch:
                        for answer in self.handler(self, pending):
                            conn.sendall(struct.pack("!H", len(answer)) + answer)
                        pending = []
        except (OSError, ssl.SSLError):
            return


# --- client-side helpers shared by the DoT and DoH tests ---------------------------------

LO = TunnelState(up=True, ifname="lo", ifindex=1, addresses=("127.0.0.1", "::1"), epoch=1)
CALLER_ID = 0x4321


def query(name: str, rdtype: str = "A", *, edns: bool = False, msg_id: int = CALLER_ID) -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    q.id = msg_id
    return q.to_wire()


def addresses(raw: bytes) -> list[str]:
    msg = dns.message.from_wire(raw)
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    """One event loop per test: the upstream's pooled connection lives in it."""

    async def main() -> None:
        await coro_fn()

    asyncio.run(main())


class ConnectCounter:
    """Wraps netbind.tcp_connect: counts connections and checks each socket is bound to the
    tunnel device before we get it (the sockets must come from netbind, nowhere else)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._real = netbind.tcp_connect
        monkeypatch.setattr(netbind, "tcp_connect", self)

    async def __call__(
        self, state: TunnelState, dest: tuple[str, int], timeout: float, *, upstream: str | None
    ) -> socket.socket:
        sock = await self._real(state, dest, timeout, upstream=upstream)
        device = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
        assert device.rstrip(b"\0") == (state.ifname or "").encode()
        self.count += 1
        return sock
