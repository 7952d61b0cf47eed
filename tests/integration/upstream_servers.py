"""Real servers for the upstream tests: unbound on a private loopback address, and a small
scripted UDP server that can misbehave (spoofing) on demand."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

# 127.0.10.0/24 belongs to the upstream/tunnel tests (contracts: unique loopback ranges).
UNBOUND_ADDR = "127.0.10.1"
SCRIPT_ADDR = "127.0.10.2"

BIG_TXT_COUNT = 12
BIG_TXT_STRING = "x" * 90  # 12 x ~100 bytes: far over 512, so TC without EDNS


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` (kernel-chosen, then released)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((host, 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on {host}")


UNBOUND_CONF = """\
server:
  interface: {addr}
  port: {port}
  do-ip4: yes
  do-ip6: no
  do-udp: yes
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
  do-not-query-localhost: no
  module-config: "iterator"
  access-control: 127.0.0.0/8 allow
  # Never recurse anywhere: only the test zone is answered, everything else REFUSED.
  local-zone: "." refuse
  local-zone: "example." static
  local-data: "example. 300 IN SOA ns.example. host.example. 1 3600 600 86400 300"
  local-data: "a.example. 300 IN A 192.0.2.1"
  local-data: "b.example. 300 IN A 192.0.2.2"
{big}
remote-control:
  control-enable: no
"""


@dataclass
class Unbound:
    addr: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def run_unbound(tmp: Path) -> Iterator[Unbound]:
    exe = shutil.which("unbound")
    if exe is None:
        raise RuntimeError("unbound is not installed")
    port = free_port(UNBOUND_ADDR)
    big = "\n".join(
        f"  local-data: 'big.example. 300 IN TXT \"{i:02d}{BIG_TXT_STRING}\"'"
        for i in range(BIG_TXT_COUNT)
    )
    conf = tmp / "unbound.conf"
    conf.write_text(UNBOUND_CONF.format(addr=UNBOUND_ADDR, port=port, dir=tmp, big=big))
    check = subprocess.run(
        ["unbound-checkconf", str(conf)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"unbound-checkconf: {check.stdout}{check.stderr}")
    proc = subprocess.Popen([exe, "-d", "-c", str(conf)], stderr=subprocess.PIPE)
    server = Unbound(UNBOUND_ADDR, port, proc, tmp / "unbound.log")
    try:
        _wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_ready(server: Unbound) -> None:
    deadline = time.monotonic() + 10
    query = dns.message.make_query("a.example.", "A")
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            err = server.proc.stderr.read().decode() if server.proc.stderr else ""
            log = server.log.read_text() if server.log.exists() else ""
            raise RuntimeError(f"unbound exited {server.proc.returncode}: {err}{log}")
        try:
            answer = dns.query.udp(query, server.addr, port=server.port, timeout=0.2)
        except (OSError, dns.exception.Timeout):
            time.sleep(0.05)
            continue
        if answer.rcode() == dns.rcode.NOERROR:
            return
    raise RuntimeError("unbound did not become ready within 10s")


Script = Callable[["ScriptedUdpServer", bytes, tuple[str, int]], None]


@dataclass
class ScriptedUdpServer:
    """A UDP server on loopback that runs ``script`` for each datagram it receives.

    ``other`` is a second socket on the same address but another port, to send answers
    from the wrong source port.
    """

    addr: str = SCRIPT_ADDR
    script: Script | None = None
    received: list[bytes] = field(default_factory=list)
    sock: socket.socket = field(init=False)
    other: socket.socket = field(init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.addr, 0))
        self.sock.settimeout(0.05)
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.other.bind((self.addr, 0))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def __enter__(self) -> ScriptedUdpServer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()
        self.other.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(data)
            if self.script is not None:
                self.script(self, data, peer)
