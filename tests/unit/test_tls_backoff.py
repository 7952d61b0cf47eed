"""The reconnect backoff of the pooled DoT/DoH upstream (upstream/backoff.py), with time
passed in: nothing here sleeps."""

from __future__ import annotations

import pytest

from stubresolver.backoff import Backoff


def test_no_failure_means_no_wait() -> None:
    backoff = Backoff(0.25, 8.0)
    assert backoff.next_delay(0.0) == 0.0
    assert backoff.next_delay(1e9) == 0.0
    assert backoff.failures == 0


def test_delay_doubles_from_initial() -> None:
    backoff = Backoff(0.25, 8.0)
    assert [backoff.failed(100.0) for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert backoff.failures == 4


def test_next_delay_counts_down_from_the_failure() -> None:
    backoff = Backoff(0.25, 8.0)
    backoff.failed(10.0)
    backoff.failed(10.0)  # 0.5 s from t=10
    assert backoff.next_delay(10.0) == pytest.approx(0.5)
    assert backoff.next_delay(10.2) == pytest.approx(0.3)
    assert backoff.next_delay(10.5) == 0.0
    assert backoff.next_delay(11.0) == 0.0  # never negative


def test_delay_is_capped() -> None:
    backoff = Backoff(0.25, 8.0)
    delays = [backoff.failed(0.0) for _ in range(10)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert backoff.next_delay(0.0) == 8.0


def test_cap_that_is_not_a_power_of_two_of_initial() -> None:
    backoff = Backoff(0.3, 1.0)
    assert [backoff.failed(0.0) for _ in range(4)] == pytest.approx([0.3, 0.6, 1.0, 1.0])


def test_hours_of_failures_do_not_overflow() -> None:
    # 0.25 * 2 ** 1024 is past the largest float: a counter that kept growing would raise
    # OverflowError after about 1025 failed connects (a server down for a few hours).
    backoff = Backoff(0.25, 8.0)
    for _ in range(5000):
        delay = backoff.failed(0.0)
    assert delay == 8.0
    assert backoff.next_delay(0.0) == 8.0


def test_reset_forgets_the_failures() -> None:
    backoff = Backoff(0.25, 8.0)
    for _ in range(6):
        backoff.failed(50.0)
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay(50.0) == 0.0
    assert backoff.failed(60.0) == 0.25  # the schedule starts over


@pytest.mark.parametrize(("initial", "maximum"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_nonsense_bounds_are_rejected(initial: float, maximum: float) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(initial, maximum)
