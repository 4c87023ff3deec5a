from __future__ import annotations

import pytest

from processors.delivery.notification import Channel
from processors.delivery.rate_limit import Rate, RateLimits, TokenBucket


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_waits_for_refill() -> None:
    clock = FakeMonotonic()
    bucket = TokenBucket(Rate(per_second=2, burst=3), clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.5)


def test_refill_never_exceeds_burst() -> None:
    clock = FakeMonotonic()
    bucket = TokenBucket(Rate(per_second=10, burst=2), clock)
    clock.now += 3600
    assert bucket.tokens == 2
    assert [bucket.take() for _ in range(3)][:2] == [0.0, 0.0]


def test_sustained_rate_over_a_minute() -> None:
    clock = FakeMonotonic()
    bucket = TokenBucket(Rate(per_second=5, burst=1), clock)
    sent = 0
    for _ in range(6000):  # 60 s in 10 ms steps
        clock.now += 0.01
        if bucket.take() == 0.0:
            sent += 1
    assert sent == pytest.approx(300, abs=1)


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    clock = FakeMonotonic()
    bucket = TokenBucket(Rate(per_second=1, burst=1), clock)
    assert bucket.take() == 0.0
    clock.now -= 50
    assert bucket.take() > 0


def test_limits_are_per_channel_and_unlisted_channels_are_free() -> None:
    clock = FakeMonotonic()
    limits = RateLimits({Channel.EMAIL: Rate(1, 1), Channel.WEBHOOK: Rate(1, 2)}, clock)
    assert limits.take(Channel.EMAIL) == 0.0
    assert limits.take(Channel.EMAIL) == pytest.approx(1.0)
    assert limits.take(Channel.WEBHOOK) == 0.0
    assert limits.take(Channel.WEBHOOK) == 0.0
    assert limits.take(Channel.WEBHOOK) > 0
    assert all(limits.take(Channel.IN_APP) == 0.0 for _ in range(100))


@pytest.mark.parametrize(("per_second", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_invalid_rates_are_refused(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        Rate(per_second, burst)
