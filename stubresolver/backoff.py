"""Exponential backoff as a pure object: time is an argument (STYLE.md 2). Used by a pooled
upstream's reconnects and by the takeover watchdog's re-asserts.

After a failed connect the next attempt waits ``initial`` seconds, doubling with each
further failure up to ``maximum``; a success or a change of path (new tunnel epoch) resets
it. There is no jitter (there never was; adding it would change behaviour): one stub talks
to a handful of servers, so there is no herd of its own reconnects to spread out, and a
fixed schedule keeps the recovery time after an outage predictable.
"""

from __future__ import annotations

import math


class Backoff:
    """Exponential backoff: ``failed(now)`` after a failed attempt, ``next_delay(now)``
    before the next one (0 means go ahead), ``reset()`` after a success or a path change."""

    __slots__ = ("_cap_after", "_failures", "_retry_at", "initial", "maximum")

    def __init__(self, initial: float, maximum: float) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        # Failures after which the doubled delay would pass ``maximum``: counting stops
        # there, so a server down for hours never overflows ``initial * 2 ** n``.
        self._cap_after = 1 + math.ceil(math.log2(maximum / initial))
        self._failures = 0
        self._retry_at = 0.0

    @property
    def failures(self) -> int:
        """Consecutive failures so far, counted up to the point the delay reached its cap."""
        return self._failures

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``; the delay (seconds) before the next one."""
        self._failures = min(self._failures + 1, self._cap_after)
        delay = min(math.ldexp(self.initial, self._failures - 1), self.maximum)  # initial * 2^(n-1)
        self._retry_at = now + delay
        return delay

    def next_delay(self, now: float) -> float:
        """Seconds from ``now`` until another attempt is allowed; 0.0 when it is now."""
        if self._failures == 0:
            return 0.0
        return max(0.0, self._retry_at - now)

    def reset(self) -> None:
        """Forget the failures: after a success, or when the path changed (new epoch)."""
        self._failures = 0
        self._retry_at = 0.0
