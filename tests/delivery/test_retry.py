from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.delivery.retry import Dead, Retry, RetryPolicy

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_ceiling_doubles_then_caps() -> None:
    policy = RetryPolicy(base=timedelta(seconds=5), cap=timedelta(seconds=60), factor=2, max_attempts=10)
    assert [policy.ceiling(k).total_seconds() for k in range(1, 7)] == [5, 10, 20, 40, 60, 60]


@given(failures=st.integers(min_value=1, max_value=10_000), seed=st.integers(min_value=0, max_value=2**32))
def test_backoff_is_jittered_within_half_ceiling_and_ceiling(failures: int, seed: int) -> None:
    policy = RetryPolicy(max_attempts=20_000)
    delay = policy.backoff(failures, random.Random(seed))
    ceiling = policy.ceiling(failures)
    assert ceiling / 2 <= delay <= ceiling <= policy.cap


def test_jitter_spreads_concurrent_retries() -> None:
    policy = RetryPolicy()
    rng = random.Random(7)
    delays = {policy.backoff(3, rng) for _ in range(50)}
    assert len(delays) == 50


def test_retry_until_max_attempts_then_dead() -> None:
    policy = RetryPolicy(base=timedelta(seconds=1), cap=timedelta(seconds=8), max_attempts=3)
    rng = random.Random(1)
    first = policy.after_failure(1, NOW, rng)
    second = policy.after_failure(2, NOW, rng)
    assert isinstance(first, Retry) and NOW + timedelta(seconds=0.5) <= first.at <= NOW + timedelta(seconds=1)
    assert isinstance(second, Retry) and NOW + timedelta(seconds=1) <= second.at <= NOW + timedelta(seconds=2)
    assert policy.after_failure(3, NOW, rng) == Dead(3)


def test_not_retriable_is_dead_at_once() -> None:
    assert RetryPolicy().after_failure(1, NOW, random.Random(0), retriable=False) == Dead(1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": timedelta(0)},
        {"cap": timedelta(seconds=1), "base": timedelta(seconds=2)},
        {"factor": 0.5},
        {"max_attempts": 0},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
