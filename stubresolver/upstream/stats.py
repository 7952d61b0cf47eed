"""Per-upstream health and counters of a pooled TLS upstream (read by ``status``)."""

from __future__ import annotations

from dataclasses import dataclass

from stubresolver.errors import UpstreamError

_SRTT_GAIN = 0.125  # RFC 6298 2.3 alpha: srtt = 7/8 srtt + 1/8 sample
# Failures that say nothing about the upstream itself: the tunnel changed or is down.
NOT_THE_UPSTREAMS_FAULT = frozenset({"epoch", "tunnel"})


@dataclass(slots=True)
class UpstreamStats:
    """Health and counters of one upstream (read by selection and ``status``).

    ``healthy`` flips to False on a failure of the upstream (not on tunnel events) and back
    on the next answer; ``srtt`` is the smoothed round-trip time in seconds (RFC 6298
    weights), ``None`` before the first answer; ``last_error`` is the last failure's text.
    """

    healthy: bool = True
    srtt: float | None = None
    last_error: str | None = None
    open_connections: int = 0
    queries: int = 0
    failures: int = 0
    handshakes: int = 0
    resumed: int = 0  # handshakes that resumed an earlier TLS session

    def record_success(self, rtt: float) -> bool:
        """Count an answer after ``rtt`` seconds; True when the upstream just recovered."""
        self.queries += 1
        self.srtt = rtt if self.srtt is None else self.srtt + _SRTT_GAIN * (rtt - self.srtt)
        recovered = not self.healthy
        self.healthy = True
        return recovered

    def record_failure(self, error: UpstreamError) -> bool:
        """Count a failure; True when the upstream's state or failure reason changed."""
        self.queries += 1
        self.failures += 1
        if error.kind in NOT_THE_UPSTREAMS_FAULT:
            return False
        changed = self.healthy or self.last_error != error.message
        self.healthy = False
        self.last_error = error.message
        return changed
