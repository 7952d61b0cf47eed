"""The performance targets of issue 4 and how a round-paired comparison is judged: the data
the bench report prints verdicts from, kept where the tests can check it too."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Median of the per-round ratios (rounds paired by index)."""
    ratios = [n / d for n, d in zip(numerators, denominators, strict=False) if d > 0]
    return statistics.median(ratios) if ratios else None


def rotate(items: Sequence[str], rnd: int) -> list[str]:
    """The run order of round ``rnd`` (1-based): each round starts one place further."""
    k = (rnd - 1) % len(items) if items else 0
    return [*items[k:], *items[:k]]


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
