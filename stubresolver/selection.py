"""Which upstream to ask, and in what order: the one health ledger (STYLE.md 13).

Every transport's answers and failures are recorded here and nowhere else, so one failure
is logged once. The order is the healthy upstreams by smoothed RTT, then the resting ones
(failed within `UNHEALTHY_FOR` seconds). Time is an argument (STYLE.md 2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from stubresolver.errors import UpstreamError

log = logging.getLogger("stubresolver.resolver")

# After a failure an upstream is tried only after the healthy ones, for this long (seconds).
UNHEALTHY_FOR = 5.0
# Smoothing factor for the RTT estimate (as in RFC 6298's SRTT, alpha = 1/8).
RTT_ALPHA = 0.125


@dataclass(slots=True)
class UpstreamHealth:
    """Per-upstream state for choosing, and for `status` to read."""

    url: str
    srtt: float = 0.0  # seconds; 0 until the first answer
    healthy: bool = True
    failures: int = 0
    last_error: str | None = None
    retry_at: float = 0.0
    answers: int = 0

    def success(self, rtt: float) -> None:
        if not self.healthy:
            log.info("upstream %s answers again", self.url)
        self.srtt = rtt if self.answers == 0 else self.srtt + RTT_ALPHA * (rtt - self.srtt)
        self.answers += 1
        self.healthy = True
        self.failures = 0

    def failure(self, error: UpstreamError, now: float) -> None:
        if error.kind in ("tunnel", "epoch"):
            return  # the tunnel's state, not this server's health
        if self.healthy or self.last_error != error.message:
            log.warning("upstream %s failed: %s: %s", self.url, error.kind, error.message)
        self.healthy = False
        self.failures += 1
        self.last_error = error.message
        self.retry_at = now + UNHEALTHY_FOR


class Selection:
    """The health of each upstream, by index, and the order to try them in."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.health = [UpstreamHealth(url) for url in urls]

    def order(self, now: float, candidates: Sequence[int] | None = None) -> list[int]:
        """``candidates`` (default: every upstream) in the order to try them; a route
        (routes.py) narrows them to its own upstreams."""
        health = self.health
        indices = range(len(health)) if candidates is None else candidates
        if len(indices) == 1:
            return [indices[0]]  # the common setup: nothing to choose
        usable = [i for i in indices if health[i].healthy or now >= health[i].retry_at]
        resting = [i for i in indices if i not in usable]
        usable.sort(key=lambda i: health[i].srtt)
        return usable + resting

    def success(self, index: int, rtt: float) -> None:
        self.health[index].success(rtt)

    def failure(self, index: int, error: UpstreamError, now: float) -> None:
        self.health[index].failure(error, now)
