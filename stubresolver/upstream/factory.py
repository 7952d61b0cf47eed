"""The one URL-scheme switch (STYLE.md 3; dnsproxy ``upstream.AddressToUpstream``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stubresolver.errors import ConfigError
from stubresolver.upstream.base import Awaited, Upstream
from stubresolver.upstream.plain import TcpUpstream, UdpUpstream

if TYPE_CHECKING:
    from stubresolver.announce import Announced
    from stubresolver.config import UpstreamConfig


def make_upstream(cfg: UpstreamConfig, announced: Announced | None = None) -> Upstream:
    """Build the transport for ``cfg.scheme``; ConfigError for a scheme we cannot serve.

    Plain UDP has the callback form itself; the others are awaitable and get the one
    adapter (`base.Awaited`) here, so the resolver drives every upstream the same way.
    ``announced`` is the holder a ``vpn`` upstream reads its servers from (the service's,
    which survives a reload)."""
    match cfg.scheme:
        case "udp":
            return UdpUpstream(cfg)
        case "tcp":
            return Awaited(TcpUpstream(cfg))
        # TLS and h2 are imported only when configured: a plain setup starts lighter.
        case "tls":  # DoT, RFC 7858 strict (upstream/tls.py)
            from stubresolver.upstream.tls import TlsUpstream  # noqa: PLC0415

            dot = TlsUpstream(cfg)
            # Queries on a connection that is up take its callback path (issue 11).
            return Awaited(dot, fast=dot.try_exchange_cb)
        case "https":  # DoH, RFC 8484 over HTTP/2 (upstream/https.py)
            from stubresolver.upstream.https import HttpsUpstream  # noqa: PLC0415

            return Awaited(HttpsUpstream(cfg))
        case "vpn":  # the servers the VPN client announced (upstream/vpn.py)
            from stubresolver.upstream.vpn import VpnUpstream  # noqa: PLC0415

            if announced is None:
                raise ConfigError("upstreams", "vpn: no announcement holder to read servers from")
            return VpnUpstream(cfg, announced)
        case _:
            raise ConfigError("upstreams", f"unknown scheme {cfg.scheme!r} in {cfg.url!r}")
