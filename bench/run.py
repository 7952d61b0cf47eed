"""One-command benchmark: stubresolver against dnsmasq, both in front of the same unbound.

Everything runs on 127.0.40.0/24: unbound is the upstream (a generated zone of 10,000 names
plus a wildcard for unique names), dnsmasq is the yardstick, stubresolver is measured with
``tunnel.interfaces: [lo]``. dnsperf drives each server in turn, alternating the order every
round. Only processes started here are stopped, by PID. See bench/README.md.

Timings live here and in the closing note of issue 4, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

if __package__ in (None, ""):  # run as `python bench/run.py`: testkit is at the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testkit.dnsperf import DnsperfResult, parse_dnsperf
from testkit.dnsprobe import wait_first_answer
from testkit.ports import free_port
from testkit.processes import start, stop_popen
from testkit.procfs import CLK_TCK, cpu_ticks, rss_kb
from testkit.stubconfig import plain_stub_config
from testkit.targets import TARGETS, median_ratio
from testkit.unbound import bench_config
from testkit.zones import HIT_NAMES, hit_name, hit_query_lines, unique_query_lines, write_lines

REPO_ROOT = Path(__file__).resolve().parent.parent

UPSTREAM_IP = "127.0.40.1"
DNSMASQ_IP = "127.0.40.2"
STUB_IP = "127.0.40.3"
DNSMASQ_FWD_IP = "127.0.40.4"

FILL_ENTRIES = 100_000

DNSMASQ_HIT_CACHE = 10_000  # large enough for the 10,000 hit names
DNSMASQ_DEFAULT_CACHE = 150  # dnsmasq's built-in default: the forwarding yardstick

# ---------------------------------------------------------------- processes and /proc


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
        t0 = time.monotonic()
        proc = start(name, argv, log, cwd=REPO_ROOT, keep_log_open=False).popen
        self.procs.append(proc)
        try:
            start_s = wait_first_answer(ip, port, proc, t0, hit_name(0))
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name}: {exc}\n--- {log} (tail) ---\n{tail}") from None
        return Server(name, ip, port, proc, log, start_s)

    def stop(self, server: Server) -> None:
        stop_popen(server.proc, grace=5)

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop_popen(proc, grace=5)


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
    ub_conf.write_text(bench_config(UPSTREAM_IP, up_port, str(workdir), HIT_NAMES))
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
            state = workdir / f"{label}-state"
            state.mkdir(exist_ok=True)
            conf = workdir / f"{label}.yaml"
            conf.write_text(plain_stub_config(STUB_IP, port, UPSTREAM_IP, up_port, str(state)))
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
