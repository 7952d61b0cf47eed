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


class ListenError(StubError):
    """A listener could not be opened (address in use, no permission, no such address)."""

    def __init__(self, message: str, *, no_ipv6: bool = False) -> None:
        super().__init__(message)
        # The host has IPv6 off (no ::1): nobody can send to that listener anyway.
        self.no_ipv6 = no_ipv6


class ControlError(StubError):
    """The control socket cannot be reached or answered nonsense (client side)."""


class ControlPermissionError(ControlError):
    """The control socket exists but this user may not connect to it."""


class TakeoverError(StubError):
    """Taking over or restoring the system's DNS failed (a file could not be read or
    written, a journal is unreadable); nothing is guessed."""


class GuardError(StubError):
    """The nftables guard could not be applied, updated or removed (nft missing or it
    rejected the transaction); the message carries nft's own words."""


class PrivilegeError(StubError):
    """Dropping to ``server.user`` failed part way (privilege.py): the service stops rather
    than serve with privileges it should not have, or without those it needs."""


class InstallError(StubError):
    """`stubresolver install` or `uninstall` cannot go on (not root, no systemctl, a step
    failed); the message names the step and the manifest says what is done."""


class WorldError(StubError):
    """Building, driving or tearing down the netns world of `demo` (and the tests) failed;
    the message carries the command and its output."""


class ProcessError(StubError):
    """A process the netns world started exited or did not become ready in time."""
