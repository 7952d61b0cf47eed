"""One-command benchmark: stubresolver against dnsmasq, both in front of the same unbound.

Everything runs on 127.0.40.0/24: unbound is the upstream (a generated zone of 10,000 names
plus a wildcard for unique names), dnsmasq is the yardstick, stubresolver is measured with
``tunnel.interfaces: [lo]``. dnsperf drives each server in turn, alternating the order every
round. Only processes started here are stopped, by PID. See bench/README.md.

Timings live here and in the closing note of issue 4, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent

UPSTREAM_IP = "127.0.40.1"
DNSMASQ_IP = "127.0.40.2"
STUB_IP = "127.0.40.3"
DNSMASQ_FWD_IP = "127.0.40.4"

ZONE = "bench.example."
WILDCARD_ZONE = "u.bench.example."
HIT_NAMES = 10_000
HIT_TTL = 3600
WILDCARD_TTL = 300
FILL_ENTRIES = 100_000

DNSMASQ_HIT_CACHE = 10_000  # large enough for the 10,000 hit names
DNSMASQ_DEFAULT_CACHE = 150  # dnsmasq's built-in default: the forwarding yardstick

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- pure helpers (tested)


def hit_name(i: int) -> str:
    """The i-th name of the static zone (no trailing dot, as dnsperf query files want)."""
    return f"h{i}.{ZONE.rstrip('.')}"


def hit_address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def unbound_config(port: int, workdir: str, names: int = HIT_NAMES) -> str:
    """unbound.conf text: a fast single-thread server answering only from local data.

    ``bench.example.`` is a static zone with ``names`` A records; ``u.bench.example.`` is a
    redirect zone, so every name under it gets the apex's A record: a wildcard that lets
    each forwarded query use a never-seen name.
    """
    lines = [
        "server:",
        f"  interface: {UPSTREAM_IP}@{port}",
        f"  port: {port}",
        "  do-ip4: yes",
        "  do-ip6: no",
        "  do-udp: yes",
        "  do-tcp: yes",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{workdir}"',
        '  pidfile: ""',
        "  do-daemonize: no",
        "  use-syslog: no",
        "  verbosity: 0",
        "  log-queries: no",
        "  log-replies: no",
        "  num-threads: 1",
        "  msg-cache-size: 64m",
        "  rrset-cache-size: 128m",
        "  do-not-query-localhost: no",
        "  access-control: 127.0.0.0/8 allow",
        "  incoming-num-tcp: 256",
        '  module-config: "iterator"',
        f'  local-zone: "{ZONE}" static',
        f'  local-zone: "{WILDCARD_ZONE}" redirect',
        f'  local-data: "{WILDCARD_ZONE} {WILDCARD_TTL} IN A 10.255.0.1"',
    ]
    lines.extend(
        f'  local-data: "{hit_name(i)}. {HIT_TTL} IN A {hit_address(i)}"' for i in range(names)
    )
    lines += ["remote-control:", "  control-enable: no", ""]
    return "\n".join(lines)


def stub_config(listen_port: int, upstream_port: int) -> str:
    """stubresolver YAML for the bench (keys from notes/contracts.md)."""
    return "\n".join(
        [
            f'listen: ["{STUB_IP}:{listen_port}"]',
            "tunnel:",
            '  interfaces: ["lo"]',
            "  poll_interval: 5.0",
            "upstreams:",
            f"  - udp://{UPSTREAM_IP}:{upstream_port}",
            "cache:",
            "  enabled: true",
            # Room for the 100,000-entry RSS measurement plus the 10,000 hit names.
            "  max_entries: 200000",
            "  max_bytes: 67108864",
            "logging:",
            "  level: warning",
            "  queries: false",
            'control_socket: ""',  # no control socket needed for measuring
            "",
        ]
    )


def hit_query_lines(names: int = HIT_NAMES) -> Iterator[str]:
    for i in range(names):
        yield f"{hit_name(i)} A\n"


def unique_query_lines(tag: str, count: int) -> Iterator[str]:
    """``count`` names under the wildcard that no cache has seen (``tag`` is per run)."""
    suffix = f".{tag}.{WILDCARD_ZONE.rstrip('.')} A\n"
    for i in range(count):
        yield f"q{i}{suffix}"


def write_lines(path: Path, lines: Iterator[str]) -> Path:
    with path.open("w", encoding="ascii") as fh:
        fh.writelines(lines)
    return path


@dataclass
class DnsperfResult:
    """What one dnsperf run reported (latencies in seconds)."""

    sent: int = 0
    completed: int = 0
    lost: int = 0
    run_time: float = 0.0
    qps: float = 0.0
    avg_latency: float = 0.0
    stddev_latency: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    end_of_file: bool = False
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list, repr=False)

    def percentile(self, p: float) -> float | None:
        return percentile(self.latencies, p)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def _number(text: str) -> str:
    return text.split(maxsplit=1)[0]


def parse_dnsperf(text: str) -> DnsperfResult:
    """Parse dnsperf 2.x output, with ``-v`` per-query lines (``> RCODE name type latency``).

    Only the first ``Statistics:`` block counts: TCP runs append ``Connection Statistics:``
    with a second ``Average Latency`` that is about connects, not queries.
    """
    res = DnsperfResult()
    in_stats = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("> "):
            parts = line.split()
            if len(parts) >= 3:
                with contextlib.suppress(ValueError):
                    res.latencies.append(float(parts[-1]))
            continue
        if line.startswith("[Status] Testing complete (end of file)"):
            res.end_of_file = True
        if line == "Statistics:":
            in_stats = True
            continue
        if line.startswith("Connection Statistics:"):
            in_stats = False
            continue
        if not in_stats or ":" not in line:
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Queries sent":
            res.sent = int(_number(value))
        elif key == "Queries completed":
            res.completed = int(_number(value))
        elif key == "Queries lost":
            res.lost = int(_number(value))
        elif key == "Run time (s)":
            res.run_time = float(_number(value))
        elif key == "Queries per second":
            res.qps = float(_number(value))
        elif key == "Average Latency (s)":
            res.avg_latency = float(_number(value))
        elif key == "Latency StdDev (s)":
            res.stddev_latency = float(_number(value))
        elif key == "Response codes":
            for item in value.split(","):
                bits = item.split()
                if len(bits) >= 2 and bits[1].isdigit():
                    res.rcodes[bits[0]] = int(bits[1])
    return res


def build_query(name: str, msg_id: int, qtype: int = 1) -> bytes:
    """A minimal RD query (RFC 1035 4.1) for the readiness probe."""
    qname = b"".join(
        bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split(".")
    )
    return (
        struct.pack("!HHHHHH", msg_id, 0x0100, 1, 0, 0, 0)
        + qname
        + b"\x00"
        + struct.pack("!HH", qtype, 1)
    )


def answer_ok(response: bytes, msg_id: int) -> bool:
    """True for a NOERROR response to ``msg_id`` carrying at least one answer."""
    if len(response) < 12:
        return False
    rid, flags, _qd, ancount = struct.unpack("!HHHH", response[:8])
    return rid == msg_id and bool(flags & 0x8000) and (flags & 0x000F) == 0 and ancount > 0


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Median of the per-round ratios (rounds paired by index)."""
    ratios = [n / d for n, d in zip(numerators, denominators, strict=False) if d > 0]
    return statistics.median(ratios) if ratios else None


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    op: str  # ">=" or "<="
    limit: float
    unit: str = ""

    def check(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        ok = value >= self.limit if self.op == ">=" else value <= self.limit
        return "PASS" if ok else "MISS"


TARGETS: tuple[Target, ...] = (
    Target("hit_qps_udp", "cache-hit QPS stub/dnsmasq (udp)", ">=", 1.0),
    Target("hit_cpu_udp", "cache-hit CPU/query stub/dnsmasq (udp)", "<=", 1.0),
    Target("hit_qps_tcp", "cache-hit QPS stub/dnsmasq (tcp)", ">=", 1.0),
    Target("hit_cpu_tcp", "cache-hit CPU/query stub/dnsmasq (tcp)", "<=", 1.0),
    Target("fwd_qps_udp", "forwarding QPS stub/dnsmasq-150 (udp)", ">=", 1.5),
    Target("fwd_qps_tcp", "forwarding QPS stub/dnsmasq-150 (tcp)", ">=", 1.5),
    Target("p50_added_hit", "p50 added at 1,000 QPS, hits", "<=", 0.1, "ms"),
    Target("p50_added_fwd", "p50 added at 1,000 QPS, forwarding", "<=", 0.2, "ms"),
    Target("rss_100k", "stub RSS with 100,000 cached entries", "<=", 60.0, "MB"),
    Target("start_ms", "stub start to first answer", "<=", 300.0, "ms"),
)


# ---------------------------------------------------------------- processes and /proc


def free_port(ip: str) -> int:
    """A port free for both UDP and TCP on ``ip`` (small race; fine on loopback)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((ip, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((ip, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on {ip}")


def cpu_ticks(pid: int) -> int:
    """utime+stime, plus cutime+cstime (dnsmasq forks a child per TCP connection)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    return sum(int(x) for x in fields[11:15])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Server:
    name: str
    ip: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    start_s: float

    @property
    def pid(self) -> int:
        return self.proc.pid


class Harness:
    """Owns every process it starts and stops them, by PID, in ``close``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, ip: str, port: int, argv: list[str]) -> Server:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO_ROOT,
            )
        self.procs.append(proc)
        try:
            start_s = wait_first_answer(ip, port, proc, t0)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name}: {exc}\n--- {log} (tail) ---\n{tail}") from None
        return Server(name, ip, port, proc, log, start_s)

    def stop(self, server: Server) -> None:
        self._terminate(server.proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self._terminate(proc)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)


def wait_first_answer(
    ip: str, port: int, proc: subprocess.Popen[bytes], t0: float, limit: float = 20.0
) -> float:
    """Seconds from ``t0`` (just before exec) to the first NOERROR answer, polling every 2 ms."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.002)
        while time.monotonic() - t0 < limit:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with status {proc.returncode} before answering")
            msg_id = secrets.randbelow(65536)
            try:
                sock.sendto(build_query(hit_name(0), msg_id), (ip, port))
                deadline = time.monotonic() + 0.002
                while time.monotonic() < deadline:
                    data = sock.recv(4096)
                    if answer_ok(data, msg_id):
                        return time.monotonic() - t0
            except (TimeoutError, ConnectionRefusedError):
                pass
            except OSError:
                time.sleep(0.002)
        raise RuntimeError(f"no answer on {ip}:{port} within {limit:.0f} s")


# ---------------------------------------------------------------- running dnsperf


@dataclass
class Sample:
    """One dnsperf run against one server."""

    server: str
    workload: str
    proto: str
    round: int
    qps: float
    completed: int
    lost: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    avg_ms: float
    cpu_us_per_query: float | None
    upstream_cpu_us_per_query: float | None
    rss_mb: float
    rcodes: dict[str, int]
    end_of_file: bool
    errors: list[str] = field(default_factory=list)


@dataclass
class Settings:
    duration: float
    rounds: int
    clients: int
    outstanding: int
    fixed_qps: int


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def run_dnsperf(
    workdir: Path,
    server: Server,
    datafile: Path,
    *,
    proto: str,
    duration: float,
    settings: Settings,
    once: bool = False,
    rate: int | None = None,
    label: str = "run",
) -> DnsperfResult:
    argv = [
        "dnsperf", "-s", server.ip, "-p", str(server.port), "-d", str(datafile),
        "-m", proto, "-l", f"{duration:g}", "-c", str(settings.clients),
        "-q", str(settings.outstanding), "-t", "2", "-v",
    ]  # fmt: skip
    if once:
        argv += ["-n", "1"]
    if rate is not None:
        argv += ["-Q", str(rate)]
    out = workdir / f"dnsperf-{label}.out"
    for attempt in (1, 2):
        with out.open("wb") as fh:
            proc = subprocess.run(
                argv, stdout=fh, stderr=subprocess.STDOUT, check=False, timeout=duration + 30
            )
        text = out.read_text(errors="replace")
        out.unlink()  # per-query lines are big; keep the temp dir small
        res = parse_dnsperf(text)
        if proc.returncode == 0:
            return res
        # dnsperf exits 1 on some transport errors (dnsmasq's forked TCP side refusing a
        # connection, say) but may still have measured; keep what it measured, else retry.
        tail = [ln for ln in text.splitlines() if not ln.startswith("> ")][-6:]
        res.errors = [f"dnsperf exit {proc.returncode}: " + " | ".join(tail)]
        if res.completed > 0 or attempt == 2:
            if res.completed == 0:
                raise RuntimeError(f"dnsperf {label}: {res.errors[0]}")
            return res
        time.sleep(1.0)
    raise AssertionError("unreachable")


def measured_run(
    workdir: Path,
    server: Server,
    upstream: Server,
    datafile: Path,
    *,
    workload: str,
    proto: str,
    rnd: int,
    settings: Settings,
    duration: float,
    once: bool = False,
    rate: int | None = None,
) -> Sample:
    before = cpu_ticks(server.pid)
    up_before = cpu_ticks(upstream.pid)
    res = run_dnsperf(
        workdir, server, datafile, proto=proto, duration=duration, settings=settings,
        once=once, rate=rate, label=f"{server.name}-{workload}-{proto}-{rnd}",
    )  # fmt: skip
    # dnsmasq's TCP children are reaped (and their CPU added to cutime) just after close.
    time.sleep(0.3 if proto == "tcp" else 0.05)
    ticks = cpu_ticks(server.pid) - before
    up_ticks = cpu_ticks(upstream.pid) - up_before
    per_q = None
    up_per_q = None
    if res.completed:
        per_q = ticks / CLK_TCK * 1e6 / res.completed
        if upstream is not server:
            up_per_q = up_ticks / CLK_TCK * 1e6 / res.completed
    return Sample(
        server=server.name, workload=workload, proto=proto, round=rnd, qps=res.qps,
        completed=res.completed, lost=res.lost,
        p50_ms=ms(res.percentile(50)), p95_ms=ms(res.percentile(95)),
        p99_ms=ms(res.percentile(99)), avg_ms=res.avg_latency * 1000.0,
        cpu_us_per_query=per_q, upstream_cpu_us_per_query=up_per_q,
        rss_mb=rss_kb(server.pid) / 1024.0, rcodes=res.rcodes, end_of_file=res.end_of_file,
        errors=res.errors,
    )  # fmt: skip


class QueryFiles:
    """Query files; forwarding files use a fresh tag per run so nothing is ever cached."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.hits = write_lines(workdir / "hits.txt", hit_query_lines())
        self._n = 0

    def unique(self, count: int) -> Path:
        self._n += 1
        tag = f"t{self._n:03d}{secrets.token_hex(3)}"
        return write_lines(self.workdir / f"unique-{tag}.txt", unique_query_lines(tag, count))


# Upper bounds on QPS, to size the unique-name files so dnsperf never wraps around.
MAX_QPS_SERVER = 80_000
MAX_QPS_UPSTREAM = 160_000


@dataclass
class Report:
    settings: dict[str, float | int | str]
    samples: list[Sample] = field(default_factory=list)
    startup_ms: dict[str, list[float]] = field(default_factory=dict)
    rss_idle_mb: dict[str, float] = field(default_factory=dict)
    stub_rss_100k_mb: float | None = None
    stub_rss_before_fill_mb: float | None = None
    fill_completed: int | None = None
    latency_at_fixed_qps: list[Sample] = field(default_factory=list)
    measures: dict[str, float | None] = field(default_factory=dict)
    verdicts: dict[str, str] = field(default_factory=dict)
    stub_kind: str = "stubresolver"
    notes: list[str] = field(default_factory=list)


WORKLOADS: tuple[tuple[str, str], ...] = (
    ("cache-hit", "udp"),
    ("cache-hit", "tcp"),
    ("forwarding", "udp"),
    ("forwarding", "tcp"),
)


def yardstick_for(workload: str, dm_hit: Server, dm_fwd: Server) -> Server:
    return dm_hit if workload == "cache-hit" else dm_fwd


def run_benchmark(args: argparse.Namespace, workdir: Path, harness: Harness) -> Report:
    settings = Settings(
        duration=args.duration, rounds=args.rounds, clients=args.clients,
        outstanding=args.outstanding, fixed_qps=1000,
    )  # fmt: skip
    report = Report(settings=asdict(settings), stub_kind=args.stub)
    files = QueryFiles(workdir)

    def note(msg: str) -> None:
        report.notes.append(msg)
        print(f"  note: {msg}", flush=True)

    # ---- start the servers
    up_port = free_port(UPSTREAM_IP)
    ub_conf = workdir / "unbound.conf"
    ub_conf.write_text(unbound_config(up_port, str(workdir)))
    print(f"starting unbound on {UPSTREAM_IP}:{up_port}", flush=True)
    unbound = harness.spawn("unbound", UPSTREAM_IP, up_port, ["unbound", "-d", "-c", str(ub_conf)])
    report.startup_ms["unbound"] = [unbound.start_s * 1000]

    def dnsmasq(name: str, ip: str, cache: int) -> Server:
        conf = workdir / f"{name}.conf"
        conf.write_text("")  # keeps /etc/dnsmasq.conf out
        port = free_port(ip)
        print(f"starting {name} on {ip}:{port} (cache-size {cache})", flush=True)
        srv = harness.spawn(
            name, ip, port,
            ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground", "--no-resolv",
             "--no-hosts", f"--server={UPSTREAM_IP}#{up_port}", f"--cache-size={cache}",
             f"--listen-address={ip}", "--bind-interfaces", f"--port={port}", "--pid-file="],
        )  # fmt: skip
        report.startup_ms.setdefault("dnsmasq", []).append(srv.start_s * 1000)
        return srv

    dm_hit = dnsmasq("dnsmasq", DNSMASQ_IP, DNSMASQ_HIT_CACHE)
    dm_fwd = dnsmasq("dnsmasq-150", DNSMASQ_FWD_IP, DNSMASQ_DEFAULT_CACHE)

    def start_stub(label: str) -> Server:
        port = free_port(STUB_IP)
        if args.stub == "dnsmasq":  # harness development stand-in
            conf = workdir / f"{label}.conf"
            conf.write_text("")
            argv = ["dnsmasq", f"--conf-file={conf}", "--keep-in-foreground", "--no-resolv",
                    "--no-hosts", f"--server={UPSTREAM_IP}#{up_port}", "--cache-size=200000",
                    f"--listen-address={STUB_IP}", "--bind-interfaces", f"--port={port}",
                    "--pid-file="]  # fmt: skip
        else:
            conf = workdir / f"{label}.yaml"
            conf.write_text(stub_config(port, up_port))
            argv = [sys.executable, "-m", "stubresolver", "run", "--config", str(conf)]
        print(f"starting {label} ({args.stub}) on {STUB_IP}:{port}", flush=True)
        srv = harness.spawn(label, STUB_IP, port, argv)
        srv.name = "stub"
        report.startup_ms.setdefault("stub", []).append(srv.start_s * 1000)
        return srv

    stub = start_stub("stub")
    for srv in (unbound, dm_hit, dm_fwd, stub):
        report.rss_idle_mb[srv.name] = rss_kb(srv.pid) / 1024.0

    # ---- warm the caches (and check that every server answers the hit names)
    print("warming caches with the 10,000 hit names", flush=True)
    for srv in (dm_hit, stub):
        res = run_dnsperf(
            workdir, srv, files.hits, proto="udp", duration=60, settings=settings, once=True,
            label=f"warm-{srv.name}",
        )  # fmt: skip
        if res.completed < HIT_NAMES or res.rcodes.get("NOERROR", 0) < res.completed:
            note(f"warm-up of {srv.name}: {res.completed} answers, rcodes {res.rcodes}")

    def datafile(workload: str, srv: Server, duration: float, rate: int | None = None) -> Path:
        if workload == "cache-hit":
            return files.hits
        cap = MAX_QPS_UPSTREAM if srv is unbound else MAX_QPS_SERVER
        return files.unique(int((rate or cap) * duration * 1.2) + 1000)

    def one(workload: str, proto: str, srv: Server, rnd: int) -> Sample:
        data = datafile(workload, srv, settings.duration)
        sample = measured_run(
            workdir, srv, unbound, data, workload=workload, proto=proto, rnd=rnd,
            settings=settings, duration=settings.duration, once=workload == "forwarding",
        )  # fmt: skip
        if workload == "forwarding":
            data.unlink()
        report.samples.append(sample)
        print(
            f"  {workload:10} {proto} r{rnd} {srv.name:12} {sample.qps:9.0f} qps"
            f"  p50 {fmt(sample.p50_ms, 3)} ms  cpu {fmt(sample.cpu_us_per_query, 1)} us/q"
            f"  rss {sample.rss_mb:.1f} MB  {rcode_summary(sample.rcodes)}",
            flush=True,
        )
        for err in sample.errors:
            note(f"{srv.name} {workload}/{proto} r{rnd}: {err}")
        if sample.end_of_file:
            note(f"{srv.name} {workload}/{proto} r{rnd}: query file ran out; raise MAX_QPS_*")
        return sample

    # ---- reference: the upstream alone, once per workload
    print("reference: unbound direct", flush=True)
    for workload, proto in WORKLOADS:
        one(workload, proto, unbound, 0)

    # ---- alternating rounds
    for rnd in range(1, settings.rounds + 1):
        print(f"round {rnd}/{settings.rounds}", flush=True)
        for workload, proto in WORKLOADS:
            pair = [yardstick_for(workload, dm_hit, dm_fwd), stub]
            if rnd % 2 == 0:
                pair.reverse()
            for srv in pair:
                one(workload, proto, srv, rnd)

    # ---- latency at a fixed 1,000 QPS
    print(f"latency at {settings.fixed_qps} QPS (udp)", flush=True)
    for workload in ("cache-hit", "forwarding"):
        for srv in (unbound, yardstick_for(workload, dm_hit, dm_fwd), stub):
            data = datafile(workload, srv, settings.duration, settings.fixed_qps)
            s = measured_run(
                workdir, srv, unbound, data, workload=workload, proto="udp", rnd=0,
                settings=settings, duration=settings.duration, rate=settings.fixed_qps,
                once=workload == "forwarding",
            )  # fmt: skip
            report.latency_at_fixed_qps.append(s)
            print(
                f"  {workload:10} {srv.name:12} p50 {fmt(s.p50_ms, 3)} ms"
                f"  p95 {fmt(s.p95_ms, 3)} ms  ({s.completed} answers)",
                flush=True,
            )

    # ---- memory with 100,000 cached entries, on a fresh stub (also a second start sample)
    harness.stop(stub)
    print(f"filling a fresh stub with {FILL_ENTRIES} unique names", flush=True)
    fresh = start_stub("stub-fill")
    report.stub_rss_before_fill_mb = rss_kb(fresh.pid) / 1024.0
    fill = files.unique(FILL_ENTRIES)
    res = run_dnsperf(
        workdir, fresh, fill, proto="udp", duration=120, settings=settings, once=True,
        label="fill",
    )  # fmt: skip
    time.sleep(0.2)
    report.fill_completed = res.completed
    report.stub_rss_100k_mb = rss_kb(fresh.pid) / 1024.0
    if res.completed < FILL_ENTRIES:
        note(f"fill: only {res.completed} of {FILL_ENTRIES} answered ({res.rcodes})")
    harness.stop(fresh)

    summarize(report)
    return report


# ---------------------------------------------------------------- summary and output


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rcode_summary(rcodes: dict[str, int]) -> str:
    bad = {k: v for k, v in rcodes.items() if k != "NOERROR"}
    return "" if not bad else "rcodes " + " ".join(f"{k}={v}" for k, v in bad.items())


def _values(samples: list[Sample], attr: str) -> list[float]:
    out: list[float] = []
    for s in samples:
        v = getattr(s, attr)
        if isinstance(v, int | float):
            out.append(float(v))
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _pick(samples: list[Sample], server: str, workload: str, proto: str) -> list[Sample]:
    return [
        s for s in samples
        if s.server == server and s.workload == workload and s.proto == proto and s.round > 0
    ]  # fmt: skip


def _paired_ratio(stub: list[Sample], ref: list[Sample], attr: str) -> float | None:
    by_round = {s.round: s for s in ref}
    nums: list[float] = []
    dens: list[float] = []
    for s in stub:
        r = by_round.get(s.round)
        a, b = getattr(s, attr), getattr(r, attr) if r else None
        if r is not None and a is not None and b is not None:
            nums.append(float(a))
            dens.append(float(b))
    return median_ratio(nums, dens)


def yardstick_name(workload: str) -> str:
    return "dnsmasq" if workload == "cache-hit" else "dnsmasq-150"


def summarize(report: Report) -> None:
    m = report.measures
    for workload, proto in WORKLOADS:
        key = ("hit" if workload == "cache-hit" else "fwd") + f"_%s_{proto}"
        st = _pick(report.samples, "stub", workload, proto)
        dm = _pick(report.samples, yardstick_name(workload), workload, proto)
        m[key % "qps"] = _paired_ratio(st, dm, "qps")
        m[key % "cpu"] = _paired_ratio(st, dm, "cpu_us_per_query")
    lat = {(s.server, s.workload): s.p50_ms for s in report.latency_at_fixed_qps}
    for workload, key in (("cache-hit", "p50_added_hit"), ("forwarding", "p50_added_fwd")):
        a, b = lat.get(("stub", workload)), lat.get(("unbound", workload))
        m[key] = None if a is None or b is None else a - b
    m["rss_100k"] = report.stub_rss_100k_mb
    starts = report.startup_ms.get("stub", [])
    m["start_ms"] = _median(starts)
    for t in TARGETS:
        report.verdicts[t.key] = t.check(m.get(t.key))


def render(report: Report) -> str:
    out: list[str] = []
    s = report.settings
    out.append(
        f"stubresolver benchmark: {s['rounds']} rounds x {s['duration']:g} s per run, "
        f"dnsperf -c {s['clients']} -q {s['outstanding']}, "
        f"{os.cpu_count()} CPUs, stub = {report.stub_kind}"
    )
    out.append("values are medians across rounds; unbound (direct) is measured once")
    for workload, proto in WORKLOADS:
        out.append("")
        out.append(f"== {workload} / {proto}")
        out.append(
            f"{'server':<14}{'QPS':>10}{'p50 ms':>9}{'p95 ms':>9}{'avg ms':>9}"
            f"{'CPU us/q':>10}{'upstr us/q':>11}{'RSS MB':>8}{'lost':>7}"
        )
        for name in ("unbound", yardstick_name(workload), "stub"):
            rows = [
                x for x in report.samples
                if x.server == name and x.workload == workload and x.proto == proto
            ]  # fmt: skip
            if not rows:
                continue
            label = "unbound direct" if name == "unbound" else name
            up = _median(_values(rows, "upstream_cpu_us_per_query"))
            out.append(
                f"{label:<14}{fmt(_median(_values(rows, 'qps')), 0):>10}"
                f"{fmt(_median(_values(rows, 'p50_ms')), 3):>9}"
                f"{fmt(_median(_values(rows, 'p95_ms')), 3):>9}"
                f"{fmt(_median(_values(rows, 'avg_ms')), 3):>9}"
                f"{fmt(_median(_values(rows, 'cpu_us_per_query')), 1):>10}"
                f"{fmt(up, 1):>11}"
                f"{fmt(_median(_values(rows, 'rss_mb')), 1):>8}"
                f"{sum(x.lost for x in rows):>7}"
            )
        kind = "hit" if workload == "cache-hit" else "fwd"
        out.append(
            f"median ratio stub/{yardstick_name(workload)}: "
            f"QPS {fmt(report.measures.get(f'{kind}_qps_{proto}'))}  "
            f"CPU/query {fmt(report.measures.get(f'{kind}_cpu_{proto}'))}"
        )
    out.append("")
    out.append(f"== latency at {report.settings['fixed_qps']} QPS (udp)")
    out.append(f"{'workload':<12}{'server':<14}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for x in report.latency_at_fixed_qps:
        out.append(
            f"{x.workload:<12}{x.server:<14}{fmt(x.p50_ms, 3):>9}{fmt(x.p95_ms, 3):>9}"
            f"{fmt(x.p99_ms, 3):>9}"
        )
    out.append("")
    out.append("== memory and start")
    idle = "  ".join(f"{k} {v:.1f} MB" for k, v in report.rss_idle_mb.items())
    out.append(f"idle RSS after start: {idle}")
    out.append(
        f"stub RSS: {fmt(report.stub_rss_before_fill_mb, 1)} MB fresh, "
        f"{fmt(report.stub_rss_100k_mb, 1)} MB after {report.fill_completed} unique answers"
    )
    starts = "  ".join(
        f"{k} {'/'.join(f'{v:.0f}' for v in vs)} ms" for k, vs in report.startup_ms.items()
    )
    out.append(f"start to first answer: {starts}")
    out.append("")
    out.append("== targets (issue 4)")
    out.append(f"{'metric':<44}{'target':>12}{'measured':>11}  result")
    for t in TARGETS:
        v = report.measures.get(t.key)
        digits = 3 if t.unit == "ms" and t.limit < 1 else (1 if t.unit else 2)
        out.append(
            f"{t.label:<44}{t.op + ' ' + f'{t.limit:g}' + (' ' + t.unit if t.unit else ''):>12}"
            f"{fmt(v, digits):>11}  {report.verdicts.get(t.key, 'n/a')}"
        )
    if report.notes:
        out.append("")
        out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)


# ---------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--duration", type=float, default=None, help="seconds per dnsperf run (5)")
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 s runs")
    p.add_argument("--clients", type=int, default=8, help="dnsperf -c (default 8)")
    p.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (default 100)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument(
        "--stub", choices=("stubresolver", "dnsmasq"), default="stubresolver",
        help="what runs in the stub slot; 'dnsmasq' is a stand-in for harness development",
    )  # fmt: skip
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds must be >= 1 and --duration > 0")
    return args


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


class _Report(Protocol):
    settings: dict[str, float | int | str]


R = TypeVar("R", bound=_Report)


def run_and_report(
    *,
    tools: Sequence[str],
    prefix: str,
    keep_tmp: bool,
    json_path: Path | None,
    body: Callable[[Path, Harness], R],
    render_report: Callable[[R], str],
) -> int:
    """What every bench command shares: check the tools, make a temp dir, run ``body``,
    stop what it started (also on SIGTERM), print the report and write it as JSON."""
    for tool in tools:
        if shutil.which(tool) is None:
            print(f"missing tool: {tool}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _raise_exit)  # so `finally` stops what we started
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    harness = Harness(workdir)
    t0 = time.monotonic()
    try:
        report = body(workdir, harness)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        harness.close()
        if keep_tmp:
            print(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.settings["elapsed_s"] = round(time.monotonic() - t0, 1)
    print()
    print(render_report(report))
    print(f"\nelapsed {report.settings['elapsed_s']} s")
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(report), indent=2) + "\n")  # type: ignore[call-overload]
        print(f"JSON written to {json_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_and_report(
        tools=("dnsperf", "dnsmasq", "unbound"),
        prefix="stubbench-",
        keep_tmp=args.keep_tmp,
        json_path=args.json,
        body=lambda workdir, harness: run_benchmark(args, workdir, harness),
        render_report=render,
    )


if __name__ == "__main__":
    sys.exit(main())
