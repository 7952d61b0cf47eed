"""The plain benchmark's report: the samples gathered, the medians and round-paired ratios,
the verdicts against the issue 4 targets (testkit.targets), and the text printed."""

import os
import statistics
from dataclasses import dataclass, field

from bench.dnsperf import Sample
from testkit.targets import TARGETS, median_ratio

WORKLOADS: tuple[tuple[str, str], ...] = (
    ("cache-hit", "udp"),
    ("cache-hit", "tcp"),
    ("forwarding", "udp"),
    ("forwarding", "tcp"),
)


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


def paired_ratio(stub: list[Sample], ref: list[Sample], attr: str) -> float | None:
    """Median of the per-round ratios of ``attr`` (samples paired by round number)."""
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
        m[key % "qps"] = paired_ratio(st, dm, "qps")
        m[key % "cpu"] = paired_ratio(st, dm, "cpu_us_per_query")
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
