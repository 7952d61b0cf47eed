"""The one small upstream interface (STYLE.md 3; dnsproxy ``upstream/upstream.go``)."""

from __future__ import annotations

from typing import Protocol

from stubresolver.tunnel_state import TunnelState


class Upstream(Protocol):
    """A DNS server reached through the tunnel.

    `exchange` takes the client's raw query (any ID) and returns the raw response carrying
    the SAME ID. On the wire the upstream uses its own random ID where that matters (UDP)
    and accepts a response only when source, ID and question (`wire.question_key`) match,
    ignoring mismatches until the deadline (anti-spoofing, RFC 5452). It raises
    `stubresolver.errors.UpstreamError` only, and honours cancellation by closing whatever
    it opened before re-raising. Sockets come only from `stubresolver.netbind`.
    """

    url: str

    async def exchange(self, query: bytes, state: TunnelState) -> bytes:
        """Send ``query`` through the tunnel described by ``state``; return the response."""
        ...

    async def close(self) -> None:
        """Close every pooled socket; the upstream may be used again afterwards."""
        ...
