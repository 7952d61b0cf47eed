"""Unpredictable 16-bit values for DNS IDs and socket choice, cheaply.

RFC 5452 9.2 asks for IDs and source ports an off-path attacker cannot predict, so they come
from the kernel CSPRNG (os.urandom), never from a seeded PRNG. One urandom call per query
was 8% of the forwarding CPU, so the bytes are fetched in batches and consumed in order.
"""

from __future__ import annotations

import os
import struct

_BATCH = 1024  # values per urandom call
_UNPACK = struct.Struct(f"!{_BATCH}H").unpack


class _Pool:
    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: list[int] = []

    def u16(self) -> int:
        values = self._values
        if not values:
            values.extend(_UNPACK(os.urandom(2 * _BATCH)))
        return values.pop()

    def below(self, bound: int) -> int:
        """Uniform in [0, bound) for bound <= 65536 (rejection sampling, no modulo bias)."""
        limit = 0x10000 - (0x10000 % bound)
        while True:
            value = self.u16()
            if value < limit:
                return value % bound


_pool = _Pool()
random_id = _pool.u16
random_below = _pool.below
