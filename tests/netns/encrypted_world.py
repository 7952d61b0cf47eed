"""Helpers for the encrypted-upstream end-to-end tests (test_encrypted_e2e.py).

Built only from the public parts of `world.py` and `harness.py` (which another engineer
owns): a throwaway PKI made with the openssl CLI, unbound serving DoT (853) and DoH (443) on
the VPN tunnel address inside the VPN namespace, the stub started with an upstream list of
our choosing, and packet captures (tcpdump) inside a namespace, parsed into ports.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import testkit.pki
from testkit.pki import Pki
from testkit.processes import Process
from testkit.unbound import DOH_PATH, vpn_tls_config

from .harness import Stub
from .world import C_TUN_ADDR, VPN_ALLOW, VPN_TUN_ADDR, VPN_ZONE, World, WorldError, run

AUTH_NAME: Final = "dns.test.example"
WRONG_NAME: Final = "wrong.test.example"
DOT_PORT: Final = 853
DOH_PORT: Final = 443


# ------------------------------------------------------------------------------- PKI


def make_pki(tmp: Path) -> Pki:
    """The test PKI: a leaf for AUTH_NAME and the VPN tunnel IP (testkit/pki.py makes it)."""
    return testkit.pki.make_pki(tmp, AUTH_NAME, (VPN_TUN_ADDR,), label="e2e")


# ---------------------------------------------------------------- DoT/DoH server (VPN ns)


_QUERY_LINE_RE: Final = re.compile(rf" info: {re.escape(C_TUN_ADDR)} \S+ \S+ IN$")


@dataclass
class TlsServer:
    """unbound in the VPN namespace serving DoT and DoH on the tunnel address."""

    world: World
    conf: Path
    log: Path
    proc: Process | None = None
    starts: int = 0

    def start(self, timeout: float = 10.0) -> None:
        """Start unbound and wait until both ports listen in the VPN namespace."""
        assert self.proc is None or not self.proc.alive(), "already running"
        self.starts += 1
        proc = self.world.spawn(
            f"vpn-unbound-tls-{self.starts}",
            self.world.ns_vpn,
            ["unbound", "-d", "-c", str(self.conf)],
        )
        self.proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise WorldError(f"unbound (DoT/DoH) exited:\n{proc.log_tail()}\n{_tail(self.log)}")
            listening = self.world.ns_run(self.world.ns_vpn, ["ss", "-Hltn"], check=False).stdout
            if all(f"{VPN_TUN_ADDR}:{p} " in listening for p in (DOT_PORT, DOH_PORT)):
                return
            time.sleep(0.05)
        raise WorldError(f"unbound (DoT/DoH) did not listen within {timeout}s:\n{_tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM our unbound (by PID) and wait for it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(signal.SIGTERM, grace=5)

    def client_queries(self) -> int:
        """Queries logged from the client's tunnel address (log-queries: yes), i.e. lines
        "info: 100.66.0.2 <name> <type> IN"; not "ssl handshake failed 100.66.0.2 port ..."."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if _QUERY_LINE_RE.search(line))


def start_tls_server(world: World, pki: Pki, timeout: float = 10.0) -> TlsServer:
    """Start unbound (DoT :853, DoH :443, TCP only) in the VPN namespace; wait until both
    ports listen. It serves the same zone as the world's plain resolver, so the probes and
    the load generator of the leak tests get the same answers."""
    workdir = world.tmp / "tls-unbound"
    workdir.mkdir(exist_ok=True)
    log = workdir / "unbound.log"
    conf = workdir / "unbound.conf"
    conf.write_text(
        vpn_tls_config(
            VPN_TUN_ADDR, DOT_PORT, DOH_PORT, workdir, log, pki.key, pki.cert, VPN_ALLOW, VPN_ZONE
        )
    )
    run(["unbound-checkconf", str(conf)])
    server = TlsServer(world, conf, log)
    server.start(timeout)
    return server


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<no log: {exc}>"


# ----------------------------------------------------------------------------- the stub


def upstream_entry(
    scheme: str,
    pki: Pki,
    *,
    auth_name: str = AUTH_NAME,
    ca_file: Path | None = None,
    pins: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One `upstreams:` mapping for DoT or DoH to the VPN resolver."""
    if scheme == "tls":
        url = f"tls://{VPN_TUN_ADDR}:{DOT_PORT}#{auth_name}"
    elif scheme == "https":
        url = f"https://{VPN_TUN_ADDR}{DOH_PATH}#{auth_name}"
    else:
        raise ValueError(scheme)
    entry: dict[str, Any] = {"url": url, "ca_file": str(ca_file or pki.ca)}
    if pins:
        entry["spki_pins"] = list(pins)
    return entry


class ConfiguredStub(Stub):
    """The harness's Stub started with an upstream list of the test's choosing."""

    def __init__(self, world: World, upstreams: list[Any]) -> None:
        super().__init__(world, upstreams)


# ----------------------------------------------------------------------------- captures

# `tcpdump -nn -q` lines: "IP 100.66.0.2.41234 > 100.66.0.1.853: tcp 0" (also IP6).
_PACKET_RE: Final = re.compile(
    r"\bIP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): (.*)$"
    r"|\bIP6 ([0-9a-f:]+)\.(\d+) > ([0-9a-f:]+)\.(\d+): (.*)$"
)
# The kernels' own link chatter: ARP on the veth, and IPv6 router/neighbour solicitations
# and MLD reports between link-local (or unspecified) addresses when a device comes up.
# No ports, no DNS.
_LINK_NOISE_RE: Final = re.compile(
    r"\bARP, |\bIP6 (fe80:[0-9a-f:]*|::) > (ff02:|fe80:)[0-9a-f:]+: (HBH )?ICMP6, "
)
# "IP 198.18.1.2 > 198.18.2.2: ICMP 198.18.1.2 udp port 50303 unreachable": the client
# answering a WireGuard packet aimed at the port of a VPN process that was just killed.
_UDP_UNREACH_RE: Final = re.compile(r"\bIP \S+ > \S+: ICMP \S+ udp port \d+ unreachable")
_KNOWN_PORTS: Final = frozenset({53, 443, 853, 51820, 1194})


@dataclass(frozen=True)
class Packet:
    src: str
    sport: int
    dst: str
    dport: int
    proto: str  # "tcp" | "udp" | "?"

    @property
    def ports(self) -> tuple[int, int]:
        return (self.sport, self.dport)


@dataclass
class CaptureResult:
    iface: str
    packets: list[Packet]
    unparsed: list[str]  # packets without ports (ICMP, ARP, ...): also evidence
    link_noise: list[str]  # ARP, IPv6 neighbour discovery and MLD between link-locals
    udp_unreachable: list[str]  # ICMP port unreachable (for a killed VPN process's port)
    syns: list[Packet]  # TCP SYNs without ACK: connections opened during the capture

    def touching(self, port: int) -> list[Packet]:
        return [p for p in self.packets if port in p.ports]

    def connections(self, port: int | None = None) -> int:
        """TCP connections opened during the capture (SYNs), to `port` or to any port."""
        return sum(1 for p in self.syns if port is None or p.dport == port)

    def port_summary(self) -> dict[str, int]:
        """How many packets per (proto, service port): a well-known port of the pair when
        there is one, else the lower port."""

        def service(p: Packet) -> int:
            known = [port for port in p.ports if port in _KNOWN_PORTS]
            return known[0] if known else min(p.ports)

        counts: Counter[str] = Counter(f"{p.proto}/{service(p)}" for p in self.packets)
        if self.link_noise:
            counts["link-chatter-arp-nd-mld"] = len(self.link_noise)
        if self.udp_unreachable:
            counts["icmp-udp-port-unreachable"] = len(self.udp_unreachable)
        return dict(sorted(counts.items()))


class Capture:
    """tcpdump -w on one interface of one namespace, from `start()` to `stop()`."""

    def __init__(self, world: World, ns: str, iface: str, name: str) -> None:
        self.world = world
        self.ns = ns
        self.iface = iface
        self.path = world.tmp / f"{name}.pcap"
        self.proc: Process | None = None

    def start(self, timeout: float = 5.0) -> Capture:
        # --immediate-mode: hand each packet to tcpdump at once (with TPACKET_V3 blocks a
        # packet can sit in the kernel ring until the block times out, and a stop then
        # loses it: "65 received by filter, 0 captured"); -U: write each packet at once;
        # -Z root: keep the right to write into the world's root-only temp directory.
        argv = ["tcpdump", "-i", self.iface, "-nn", "--immediate-mode", "-U", "-Z", "root",
                "-w", str(self.path)]  # fmt: skip
        proc = self.world.spawn(f"tcpdump-{self.path.stem}", self.ns, argv)
        self.proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise WorldError(f"tcpdump on {self.iface} exited:\n{proc.log_tail()}")
            if "listening on" in proc.log_tail():
                return self
            time.sleep(0.02)
        raise WorldError(f"tcpdump on {self.iface} not listening:\n{proc.log_tail()}")

    def stop(self) -> CaptureResult:
        """Stop (SIGINT: tcpdump flushes and exits; an interface that vanished has already
        ended it) and parse what was written."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(signal.SIGINT, grace=5)
        return read_capture(self.path, self.iface)


def read_capture(path: Path, iface: str) -> CaptureResult:
    packets, unparsed, noise, unreachable = _parse(_read(path))
    syns, _, _, _ = _parse(_read(path, "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"))
    return CaptureResult(iface, packets, unparsed, noise, unreachable, syns)


def _read(path: Path, bpf: str | None = None) -> str:
    # -q: "tcp <len>" / "UDP, length <len>" instead of decoding the payload (DNS or TLS).
    argv = ["tcpdump", "-r", str(path), "-nn", "-q"]
    out = run([*argv, bpf] if bpf else argv, check=False)
    if out.returncode != 0 and not out.stdout:
        raise WorldError(f"tcpdump -r {path}: {out.stderr}")
    return out.stdout


def _parse(text: str) -> tuple[list[Packet], list[str], list[str], list[str]]:
    packets: list[Packet] = []
    unparsed: list[str] = []
    noise: list[str] = []
    unreachable: list[str] = []
    for line in text.splitlines():
        m = _PACKET_RE.search(line)
        if m is None:
            if _LINK_NOISE_RE.search(line):
                noise.append(line)
            elif _UDP_UNREACH_RE.search(line):
                unreachable.append(line)
            else:
                unparsed.append(line)
            continue
        src, sport, dst, dport, rest = (g for g in m.groups() if g is not None)
        proto = "tcp" if rest.startswith("tcp") else "udp" if rest.startswith("UDP") else "?"
        packets.append(Packet(src, int(sport), dst, int(dport), proto))
    return packets, unparsed, noise, unreachable
