"""dnsperf's output, parsed: what one run sent, got back and how fast (no I/O here)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field


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
