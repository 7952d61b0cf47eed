"""Split DNS: which upstreams may answer a name (issue 9).

``routes:`` in the config maps a suffix to its own upstream list; the domains a VPN
announces (`tunnel-up --domain`) route to the ``vpn`` upstream. Everything else goes to
``upstreams``. The longest matching suffix wins, so ``a.corp.example`` follows a route for
``corp.example`` over one for ``example``; at the same suffix a configured route beats an
announced one (the user's word over the VPN's). Matching is on label boundaries of the
lower-cased wire name: ``xcorp.example`` is not below ``corp.example``.

Every upstream here is one of the resolver's, so each is bound to the tunnel like any
other: a route chooses among the tunnel's servers, never a way around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stubresolver import wire
from stubresolver.announce import Announced
from stubresolver.config import Route, UpstreamConfig


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """Why a name goes where it goes: ``kind`` is "route" (a configured route's suffix),
    "announced" (a domain the VPN announced) or "default" (``upstreams``)."""

    kind: str
    suffix: bytes | None  # wire form; None for the default
    upstreams: tuple[int, ...]


class Router:
    """Upstream indices (into the resolver's list) for a name; `candidates` is pure."""

    __slots__ = ("_announced", "_default", "_routes", "_vpn")

    def __init__(
        self,
        upstreams: Sequence[UpstreamConfig],
        defaults: Sequence[UpstreamConfig],
        routes: Sequence[Route],
        announced: Announced | None,
    ) -> None:
        index = {cfg: i for i, cfg in enumerate(upstreams)}
        self._default = tuple(index[cfg] for cfg in defaults)
        self._routes = {
            wire.encode_name(route.suffix): tuple(index[cfg] for cfg in route.upstreams)
            for route in routes
        }
        vpn = [i for i, cfg in enumerate(upstreams) if cfg.scheme == "vpn"]
        self._vpn: tuple[int, ...] | None = (vpn[0],) if vpn else None
        # Announced domains route only where a vpn upstream exists to answer them.
        self._announced = announced if self._vpn is not None else None

    @property
    def default(self) -> tuple[int, ...]:
        return self._default

    def candidates(self, qname_lower: bytes) -> tuple[int, ...]:
        """The upstreams for ``qname_lower`` (wire form, lower case), in config order."""
        if not self._routes and (self._announced is None or not self._announced.domains_wire):
            return self._default  # the common setup: one list for every name
        return self._walk(qname_lower)[2]

    def choose(self, qname_lower: bytes) -> RouteChoice:
        """The route that takes ``qname_lower``, with its suffix (`explain` prints it)."""
        return RouteChoice(*self._walk(qname_lower))

    def _walk(self, qname_lower: bytes) -> tuple[str, bytes | None, tuple[int, ...]]:
        """(kind, suffix, upstreams) of the longest matching suffix: the one match rule.
        A plain tuple: a frozen dataclass costs a few hundred ns more per flight."""
        routes = self._routes
        announced = self._announced_wire()
        pos = 0
        while qname_lower[pos]:  # longest suffix first: the whole name, then its parent ...
            suffix = qname_lower[pos:]
            found = routes.get(suffix)
            if found is not None:
                return ("route", suffix, found)
            if suffix in announced:
                assert self._vpn is not None
                return ("announced", suffix, self._vpn)
            pos += qname_lower[pos] + 1
        return ("default", None, self._default)

    def _announced_wire(self) -> frozenset[bytes] | tuple[()]:
        return self._announced.domains_wire if self._announced is not None else ()
