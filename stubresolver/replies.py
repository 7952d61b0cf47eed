"""The resolver's own answers, one builder per named outcome that is not a real answer.

Each carries an Extended DNS Error (RFC 8914) saying why, and our UDP size in its OPT when
the client sent one (RFC 6891 6.2.3). `wire.build_response` is the one constructor.
"""

from __future__ import annotations

from stubresolver import wire
from stubresolver.errors import UpstreamError


def refused_tunnel_down(query: wire.Query, data: bytes, ifname: str, payload: int) -> bytes:
    """REFUSED while the tunnel is down (RFC 8914 4.24: INFO-CODE 23 "Network Error")."""
    return wire.build_response(
        query,
        data,
        wire.REFUSED,
        ede=(wire.EDE_NETWORK_ERROR, f"tunnel {ifname} down"),
        payload=payload,
    )


def refused_client(query: wire.Query, data: bytes, payload: int) -> bytes:
    """REFUSED for a client outside `server.allow` (RFC 8914 4.19: "Prohibited")."""
    return wire.build_response(
        query, data, wire.REFUSED, ede=(wire.EDE_PROHIBITED, ""), payload=payload
    )


def servfail_tunnel_changed(
    query: wire.Query, data: bytes, ifname: str, up: bool, payload: int
) -> bytes:
    """SERVFAIL for a query whose path went away: never a late answer across an epoch."""
    text = f"tunnel {ifname} {'changed' if up else 'down'}"
    return wire.build_response(
        query, data, wire.SERVFAIL, ede=(wire.EDE_NETWORK_ERROR, text), payload=payload
    )


def servfail_reloaded(query: wire.Query, data: bytes, payload: int) -> bytes:
    """SERVFAIL for a query in flight when a reload replaced the upstreams: nothing is sent
    under the old configuration after the reload (the client retries under the new one)."""
    return wire.build_response(
        query,
        data,
        wire.SERVFAIL,
        ede=(wire.EDE_NOT_READY, "configuration reloaded"),
        payload=payload,
    )


def servfail_upstream(query: wire.Query, data: bytes, error: UpstreamError, payload: int) -> bytes:
    """SERVFAIL when every upstream failed (RFC 8914 4.23: "No Reachable Authority"), with
    the reason (a TLS failure, a timeout)."""
    text = f"{error.kind}: {error.message}"[:200]
    return wire.build_response(
        query, data, wire.SERVFAIL, ede=(wire.EDE_NO_REACHABLE_AUTHORITY, text), payload=payload
    )


def servfail_busy(query: wire.Query, data: bytes, text: str, payload: int) -> bytes:
    """SERVFAIL when a bound on work in flight is reached (flights, waiters)."""
    return wire.build_response(
        query, data, wire.SERVFAIL, ede=(wire.EDE_OTHER, text), payload=payload
    )


def formerr_too_large(query: wire.Query, data: bytes, payload: int) -> bytes:
    """FORMERR for a query larger than any datagram we send (a 64 KB TCP query, say): it is
    the client's fault alone, so it never reaches an upstream or a flight."""
    return wire.build_response(
        query,
        data,
        wire.FORMERR,
        ede=(wire.EDE_OTHER, "query too large to forward"),
        payload=payload,
    )
