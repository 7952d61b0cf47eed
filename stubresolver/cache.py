"""Raw-bytes response cache (DESIGN.md "cache").

Entries are the upstream's response bytes plus the TTL offsets found once on insert; a hit
copies the bytes and patches ID, question case and TTLs in place, with no parse. Time is an
argument (STYLE.md 2): the caller passes ``now`` from its loop clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from stubresolver import wire
from stubresolver.errors import WireError

# Per-entry bookkeeping beyond the response bytes and the key (tuple, floats, dict slot),
# measured with sys.getsizeof on CPython 3.11; used only for the byte bound.
_ENTRY_OVERHEAD = 200


@dataclass(frozen=True, slots=True)
class CacheLimits:
    max_entries: int = 10_000
    max_bytes: int = 16 * 1024 * 1024
    min_ttl: int = 0
    max_ttl: int = 86_400
    negative_max_ttl: int = 3_600


class Cache:
    """LRU cache of responses keyed by ``Query.cache_key()``, bounded in entries and bytes."""

    __slots__ = ("_bytes", "_entries", "hits", "limits", "misses")

    def __init__(self, limits: CacheLimits | None = None) -> None:
        self.limits = limits or CacheLimits()
        # key -> (response, ttl offsets, inserted at, expires at)
        self._entries: OrderedDict[bytes, tuple[bytes, tuple[int, ...], float, float]] = (
            OrderedDict()
        )
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
        key = query.cache_key()
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        msg, offsets, inserted, expires = entry
        if now >= expires:
            self._remove(key, msg)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return wire.patch_response(msg, query.msg_id, query.qname, offsets, int(now - inserted))

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
        if info.rcode not in (wire.NOERROR, wire.NXDOMAIN):
            return False
        ttl = info.ttl
        if not info.negative:
            ttl = max(self.limits.min_ttl, min(ttl, self.limits.max_ttl))
        if ttl <= 0:
            return False
        if ttl != info.ttl and info.ttl_offsets:
            # Clamp the stored TTLs too, so a hit never reports more than we keep it for.
            response = _clamp_ttls(response, info.ttl_offsets, ttl)
        key = query.cache_key()
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[0]) + len(key) + _ENTRY_OVERHEAD
        self._entries[key] = (response, info.ttl_offsets, now, now + ttl)
        self._bytes += len(response) + len(key) + _ENTRY_OVERHEAD
        self._evict()
        return True

    def flush(self) -> int:
        """Drop everything (a tunnel change: answers from the old path are not trusted)."""
        count = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        return count

    def _remove(self, key: bytes, msg: bytes) -> None:
        del self._entries[key]
        self._bytes -= len(msg) + len(key) + _ENTRY_OVERHEAD

    def _evict(self) -> None:
        limits = self.limits
        entries = self._entries
        while entries and (len(entries) > limits.max_entries or self._bytes > limits.max_bytes):
            key, (msg, _, _, _) = entries.popitem(last=False)
            self._bytes -= len(msg) + len(key) + _ENTRY_OVERHEAD


def _clamp_ttls(msg: bytes, offsets: tuple[int, ...], ceiling: int) -> bytes:
    out = bytearray(msg)
    for at in offsets:
        ttl = int.from_bytes(out[at : at + 4], "big") & 0x7FFFFFFF
        if ttl > ceiling:
            out[at : at + 4] = ceiling.to_bytes(4, "big")
    return bytes(out)
