"""Raw-bytes response cache (DESIGN.md "cache").

Entries are the upstream's response bytes plus the TTL offsets found once on insert; a hit
copies the bytes and patches ID, question case and TTLs in place, with no parse. Time is an
argument (STYLE.md 2): the caller passes ``now`` from its loop clock.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from stubresolver import wire
from stubresolver.errors import WireError


@dataclass(frozen=True, slots=True)
class CacheLimits:
    max_entries: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_max_ttl: int = 3_600


# One packed bytes object per entry: expires-at, inserted-at, the number of TTL offsets, the
# offsets, then the response. One object instead of a tuple of five keeps an entry near
# 100 bytes plus the response (issue 4: 100,000 entries within the RSS budget).
_HEAD = struct.Struct("!ddH")
_OFFSETS = [struct.Struct(f"!{n}H") for n in range(256)]
# Bookkeeping beyond the two bytes objects' contents: their object headers (2 x 33) and a
# dict slot with its share of the table; used only for the byte bound.
_ENTRY_OVERHEAD = 140
# Evict this fraction at once when over a bound, so the scan over freed dict slots at the
# front of the insertion order is paid once per batch, not once per insert.
_EVICT_BATCH = 64


@dataclass(frozen=True, slots=True)
class Cached:
    """What `Cache.peek` found: the answer as a hit would send it now (TTLs aged), and
    the whole seconds left, counted as a hit ages the TTLs (so it matches the answer's)."""

    response: bytes
    ttl_left: int


class Cache:
    """LRU cache of responses keyed by ``Query.cache_key()``, bounded in entries and bytes.

    A plain dict in insertion order: a hit moves its entry to the end (pop and re-insert),
    eviction takes from the front.
    """

    __slots__ = ("_bytes", "_entries", "hits", "limits", "misses")

    def __init__(self, limits: CacheLimits | None = None) -> None:
        self.limits = limits or CacheLimits()
        self._entries: dict[bytes, bytes] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def lookup(self, query: wire.Query, now: float) -> bytes | None:
        """The cached answer patched for this client, or None on a miss or expiry."""
        return self.lookup_key(query.key, query.msg_id, query.qname, now)

    def lookup_key(self, key: bytes, msg_id: int, qname: bytes, now: float) -> bytes | None:
        """`lookup` by a `Query.cache_key`, for a client's ID and question spelling."""
        entries = self._entries
        entry = entries.pop(key, None)
        if entry is None:
            self.misses += 1
            return None
        expires, inserted, count = _HEAD.unpack_from(entry)
        if now >= expires:
            self._bytes -= len(entry) + len(key) + _ENTRY_OVERHEAD
            self.misses += 1
            return None
        entries[key] = entry
        self.hits += 1
        offsets = _OFFSETS[count].unpack_from(entry, _HEAD.size) if count else ()
        start = _HEAD.size + 2 * count
        return wire.patch_response(entry[start:], msg_id, qname, offsets, int(now - inserted))

    def peek(self, key: bytes, msg_id: int, qname: bytes, now: float) -> Cached | None:
        """The entry for ``key`` as a hit would serve it now to a client with this ID and
        question spelling (as `lookup_key`), without the side effects of a
        lookup: no hit or miss counted, no LRU move, an expired entry left for the next
        lookup to drop (`stubresolver explain` must not change what it explains)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, inserted, count = _HEAD.unpack_from(entry)
        if now >= expires:
            return None
        offsets = _OFFSETS[count].unpack_from(entry, _HEAD.size) if count else ()
        start = _HEAD.size + 2 * count
        age = int(now - inserted)
        patched = wire.patch_response(entry[start:], msg_id, qname, offsets, age)
        return Cached(patched, round(expires - inserted) - age)

    def store(self, query: wire.Query, response: bytes, now: float) -> bool:
        """Cache ``response`` to ``query`` if it may be cached; return whether it was.

        Only complete NOERROR/NXDOMAIN answers are kept: a truncated answer is not the whole
        answer, and SERVFAIL/REFUSED describe the upstream's state, not the name's.
        """
        if wire.is_truncated(response):
            return False
        try:
            info = wire.scan_response(response, self.limits.negative_max_ttl)
        except WireError:
            return False
        if info.rcode not in (wire.NOERROR, wire.NXDOMAIN) or len(info.ttl_offsets) > 255:
            return False
        ttl = info.ttl
        if not info.negative:
            ttl = max(self.limits.min_ttl, min(ttl, self.limits.max_ttl))
        if ttl <= 0:
            return False
        if info.ttl_offsets and (ttl != info.ttl or info.negative):
            # Clamp the stored TTLs too, so a hit never reports more than we keep it for.
            response = _clamp_ttls(response, info.ttl_offsets, ttl)
        count = len(info.ttl_offsets)
        entry = (
            _HEAD.pack(now + ttl, now, count) + _OFFSETS[count].pack(*info.ttl_offsets) + response
        )
        key = query.key
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old) + len(key) + _ENTRY_OVERHEAD
        self._entries[key] = entry
        self._bytes += len(entry) + len(key) + _ENTRY_OVERHEAD
        limits = self.limits
        if len(self._entries) > limits.max_entries or self._bytes > limits.max_bytes:
            self._evict()
        return True

    def flush(self) -> int:
        """Drop everything (a tunnel change: answers from the old path are not trusted)."""
        count = len(self._entries)
        self._entries = {}
        self._bytes = 0
        return count

    def _evict(self) -> None:
        limits = self.limits
        entries = self._entries
        batch = max(1, len(entries) // _EVICT_BATCH)
        while entries and (len(entries) > limits.max_entries or self._bytes > limits.max_bytes):
            for key in list(itertools.islice(entries, batch)):
                self._bytes -= len(entries.pop(key)) + len(key) + _ENTRY_OVERHEAD


def _clamp_ttls(msg: bytes, offsets: tuple[int, ...], ceiling: int) -> bytes:
    out = bytearray(msg)
    for at in offsets:
        ttl = int.from_bytes(out[at : at + 4], "big") & 0x7FFFFFFF
        if ttl > ceiling:
            out[at : at + 4] = ceiling.to_bytes(4, "big")
    return bytes(out)
