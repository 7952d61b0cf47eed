"""The named end of every query (STYLE.md 6: one outcome per query, counted and logged)."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    CACHED = "cached"
    FORWARDED = "forwarded"
    LOCAL = "local"
    REFUSED_TUNNEL_DOWN = "refused-tunnel-down"
    REFUSED_CLIENT = "refused-client"
    SERVFAIL_UPSTREAM = "servfail-upstream"
    SERVFAIL_TUNNEL_CHANGED = "servfail-tunnel-changed"
    SERVFAIL_BUSY = "servfail-busy"
    FORMERR = "formerr"
    NOTIMP = "notimp"
    BADVERS = "badvers"
    DROPPED = "dropped"

    # Members are singletons: identity hashing is correct, and Enum's default hashes the
    # name in Python code on every count (a measurable share of a cache hit).
    __hash__ = object.__hash__
