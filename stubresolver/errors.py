"""The one small error hierarchy (DESIGN.md, "Errors").

Foreign exceptions (OSError, ssl.SSLError, yaml.YAMLError, ...) are translated into these at
the boundary where they occur; nothing returns ``None`` for failure.
"""

from __future__ import annotations

from typing import Literal

UpstreamErrorKind = Literal["timeout", "connect", "protocol", "tls", "epoch", "tunnel"]


class StubError(Exception):
    """Base of every error stubresolver raises on purpose."""


class ConfigError(StubError):
    """A config value is wrong; ``path`` names the key (``upstreams[1].url``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class WireError(StubError):
    """A query that cannot be served as sent.

    ``rcode`` is the response code to answer with (FORMERR, NOTIMP); ``None`` means drop the
    packet silently, because no header could be read to answer to (RFC 1035 4.1.1) or it is
    a response (QR=1) that must not be answered (avoids reflection loops).
    """

    def __init__(self, rcode: int | None, message: str) -> None:
        super().__init__(message)
        self.rcode = rcode


class TunnelDown(StubError):
    """The tunnel is down (or lost its address); nothing may be sent."""

    def __init__(self, ifname: str) -> None:
        super().__init__(f"tunnel {ifname} down")
        self.ifname = ifname


class UpstreamError(StubError):
    """An upstream exchange failed.

    kind: ``timeout`` (no answer in time), ``connect`` (socket/connect failed: ENODEV,
    ENETUNREACH, ...), ``protocol`` (bad or mismatched answer), ``tls`` (handshake,
    certificate or pin failure), ``epoch`` (the tunnel changed while in flight),
    ``tunnel`` (the tunnel is down or has no address of the needed family).
    """

    def __init__(self, kind: UpstreamErrorKind, upstream: str, message: str) -> None:
        super().__init__(f"{upstream}: {kind}: {message}")
        self.kind: UpstreamErrorKind = kind
        self.upstream = upstream
        self.message = message


class TakeoverError(StubError):
    """Taking over or restoring the system's DNS configuration failed."""


class FirewallError(StubError):
    """Applying or removing the nftables guard failed."""
