"""Real TLS servers for the DoT/DoH tests: a test CA made with the openssl CLI, unbound
serving DoT (``tls-port``) and DoH (``https-port``) on 127.0.30.1, and a scripted DoT server
of our own that answers pipelined queries in the order a test wants."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from bench import pki as pki_module
from bench.pki import Pki
from stubresolver import netbind
from stubresolver.tunnel_state import TunnelState

# 127.0.30.0/24 belongs to the encrypted-upstream tests (contracts: unique loopback ranges).
TLS_ADDR = "127.0.30.1"
SCRIPT_TLS_ADDR = "127.0.30.2"
AUTH_NAME = "dns.test.example"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_pki(tmp: Path) -> Pki:
    """The test PKI for the loopback DoT/DoH servers (bench/pki.py makes it)."""
    return pki_module.make_pki(tmp, AUTH_NAME, (TLS_ADDR, SCRIPT_TLS_ADDR))


UNBOUND_TLS_CONF = """\
server:
  interface: {addr}@{dot}
  interface: {addr}@{doh}
  tls-port: {dot}
  https-port: {doh}
  tls-service-key: "{key}"
  tls-service-pem: "{cert}"
  http-endpoint: "/dns-query"
  do-ip4: yes
  do-ip6: no
  do-udp: no
  do-tcp: yes
  num-threads: 1
  so-reuseport: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  logfile: "{dir}/unbound.log"
  verbosity: 1
  tcp-idle-timeout: 30000
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  statistics-cumulative: yes
  extended-statistics: yes
  # Never recurse anywhere: only the test zone is answered, everything else REFUSED.
  local-zone: "." refuse
  local-zone: "example." static
  local-data: "example. 300 IN SOA ns.example. host.example. 1 3600 600 86400 300"
  local-data: "a.example. 300 IN A 192.0.2.1"
  local-data: "b.example. 300 IN A 192.0.2.2"
remote-control:
  control-enable: yes
  control-interface: "{dir}/control.sock"
  control-use-cert: no
"""


@dataclass
class UnboundTls:
    """unbound serving DoT on ``dot_port`` and DoH on ``doh_port``; restartable."""

    dir: Path
    pki: Pki
    addr: str = TLS_ADDR
    dot_port: int = 0
    doh_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "unbound.conf"

    def write_conf(self) -> None:
        self.dot_port = free_port(self.addr)
        self.doh_port = free_port(self.addr)
        self.conf.write_text(
            UNBOUND_TLS_CONF.format(
                addr=self.addr,
                dot=self.dot_port,
                doh=self.doh_port,
                dir=self.dir,
                key=self.pki.key,
                cert=self.pki.cert,
            )
        )
        check = subprocess.run(
            ["unbound-checkconf", str(self.conf)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"unbound-checkconf: {check.stdout}{check.stderr}")

    def start(self) -> None:
        exe = shutil.which("unbound")
        if exe is None:
            raise RuntimeError("unbound is not installed")
        self.proc = subprocess.Popen([exe, "-d", "-c", str(self.conf)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = (self.dir / "unbound.log").read_text(errors="replace")
                raise RuntimeError(f"unbound exited {self.proc.returncode}: {err}{log}")
            if all(_port_open(self.addr, p) for p in (self.dot_port, self.doh_port)):
                return
            time.sleep(0.05)
        raise RuntimeError("unbound did not listen within 10s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

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


def _port_open(addr: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((addr, port)) == 0


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
