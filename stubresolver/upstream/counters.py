"""Transport counters of a pooled DoT/DoH upstream (read by ``status``).

Only what the transport alone knows: connections and TLS sessions. Health, RTT and the
"upstream failed" log belong to the resolver's ledger (STYLE.md 13: one fact, one place).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# Failures that say nothing about the upstream itself: the tunnel changed or is down.
NOT_THE_UPSTREAMS_FAULT = frozenset({"epoch", "tunnel"})


@dataclass(slots=True)
class TransportCounters:
    """Counts since start; ``open_connections`` is the number open now."""

    open_connections: int = 0
    handshakes: int = 0  # connections opened (completed TLS handshakes)
    resumed: int = 0  # handshakes that resumed an earlier TLS session
    reused: int = 0  # queries sent on an already open connection
    retries: int = 0  # queries retried on a new connection after a reused one died
    connect_failures: int = 0  # connects that failed through the upstream's fault

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)
