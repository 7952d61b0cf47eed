"""Parsed queries remembered by their bytes, so a repeated query skips the parse.

Clients repeat byte-identical queries but for the ID (glibc, browsers, dnsperf): a query seen
before needs no parse and no policy check to find its cached answer (a cached name is never a
local one). Issue 4: the hit path. Only queries that hit the cache are remembered, so a flood
of unique names costs nothing here and the hot names fit.

Bounded in bytes as well as entries (issue 7): a query is remembered only when it is no
longer than `MAX_QUERY` (a real query is under 300 bytes; a 64 KB TCP query that hits must
not pin 64 KB), and the table is cleared when its estimated size would pass ``max_bytes``.
"""

from __future__ import annotations

from stubresolver import wire

# Longest query (bytes after the ID) worth remembering: a 255-octet name, the question and
# an OPT with a few options.
MAX_QUERY = 512
# What one entry costs beyond its key bytes: the dict slot, the key's bytes object header,
# and the slotted `wire.Query` with its own qname, lower-cased name and cache key.
ENTRY_OVERHEAD = 400
# Default budget: about 16k typical entries.
MAX_BYTES = 8 * 1024 * 1024


class HotQueries:
    """A bounded map from a query's bytes after the ID to its parse."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._seen: dict[bytes, wire.Query] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def size_bytes(self) -> int:
        """The estimated memory the table holds."""
        return self._bytes

    def get(self, tail: bytes) -> wire.Query | None:
        """The parse of a query whose bytes after the ID are ``tail``, if remembered. Only
        its cache key, question spelling and UDP size are used, never its ID."""
        return self._seen.get(tail)

    def remember(self, tail: bytes, query: wire.Query) -> None:
        if len(tail) > MAX_QUERY or tail in self._seen:
            return
        cost = _cost(tail, query)
        if self._bytes + cost > self.max_bytes:
            # Cleared, not evicted one by one: the hot names come back on their next hit,
            # and the hit path stays a plain dict lookup.
            self._seen.clear()
            self._bytes = 0
        self._seen[tail] = query
        self._bytes += cost

    def clear(self) -> None:
        self._seen.clear()
        self._bytes = 0


def _cost(tail: bytes, query: wire.Query) -> int:
    return len(tail) + 2 * len(query.qname) + len(query.key) + ENTRY_OVERHEAD
