"""Reconnect backoff: exponential, capped, jittered, reset by a success."""

from __future__ import annotations

import pytest

from ingest.backoff import Backoff


def ceiling(low: float, high: float) -> float:
    return high


def test_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, uniform=ceiling)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_success_resets_the_sequence() -> None:
    backoff = Backoff(0.5, 4.0, uniform=ceiling)
    backoff.next_delay()
    backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_jitter_stays_within_bounds() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 100


def test_many_failures_do_not_overflow() -> None:
    backoff = Backoff(1.0, 30.0, uniform=ceiling)
    for _ in range(5000):
        assert backoff.next_delay() <= 30.0


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (2.0, 1.0)])
def test_nonsense_settings_are_refused(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(initial, cap)
