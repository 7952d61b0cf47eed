"""Batched CSPRNG values for DNS IDs (RFC 5452 9.2)."""

from __future__ import annotations

from collections import Counter

from stubresolver.randomness import random_below, random_id


def test_ids_cover_the_16_bit_range_without_repeating_batches() -> None:
    values = [random_id() for _ in range(20_000)]
    assert all(0 <= v <= 0xFFFF for v in values)
    # 20,000 draws from 65,536 values: about 17,600 distinct expected; a stuck or repeated
    # batch would give far fewer.
    assert len(set(values)) > 15_000


def test_below_is_in_range_and_roughly_uniform() -> None:
    counts = Counter(random_below(10) for _ in range(50_000))
    assert set(counts) == set(range(10))
    assert min(counts.values()) > 4_000  # expected 5,000 each
    assert all(random_below(1) == 0 for _ in range(100))
