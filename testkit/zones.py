"""The bench zone: the names the bench's unbound serves and the query files dnsperf sends.

``bench.example.`` holds ``HIT_NAMES`` A records (the cache-hit workload asks them over and
over); ``u.bench.example.`` is a redirect zone, so every name under it is answered and each
forwarded query can use a name no cache has seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

ZONE = "bench.example."
WILDCARD_ZONE = "u.bench.example."
HIT_NAMES = 10_000
HIT_TTL = 3600
WILDCARD_TTL = 300


def hit_name(i: int) -> str:
    """The i-th name of the static zone (no trailing dot, as dnsperf query files want)."""
    return f"h{i}.{ZONE.rstrip('.')}"


def hit_address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def bench_zone_lines(names: int = HIT_NAMES) -> list[str]:
    """unbound ``local-zone``/``local-data`` lines of the bench zone."""
    return [
        f'  local-zone: "{ZONE}" static',
        f'  local-zone: "{WILDCARD_ZONE}" redirect',
        f'  local-data: "{WILDCARD_ZONE} {WILDCARD_TTL} IN A 10.255.0.1"',
        *(f'  local-data: "{hit_name(i)}. {HIT_TTL} IN A {hit_address(i)}"' for i in range(names)),
    ]


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
