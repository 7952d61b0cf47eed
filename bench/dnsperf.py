"""Driving dnsperf: one run against one server, with the CPU and memory the server (and its
upstream) spent on it; the query files (testkit.zones) it reads."""

import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Server
from testkit.dnsperf import DnsperfResult, parse_dnsperf
from testkit.procfs import CLK_TCK, cpu_ticks, rss_kb
from testkit.zones import hit_query_lines, unique_query_lines, write_lines


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
