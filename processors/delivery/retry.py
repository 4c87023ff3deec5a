"""When to try a failed delivery again: capped exponential backoff with jitter, and dead after N attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Dead", "Retry", "RetryPolicy"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again at `at`."""

    at: datetime


@dataclass(frozen=True, slots=True)
class Dead:
    """Give up: `attempts` failed (or the last failure cannot be retried)."""

    attempts: int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with "equal jitter" (half fixed, half random) and a limit on attempts.

    The delay before attempt k+1 (after k failures) is drawn from [c/2, c] with c = min(cap, base * factor**(k-1)),
    so concurrent dispatchers spread out without any delay collapsing to zero.
    """

    base: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(minutes=15)
    factor: float = 2.0
    max_attempts: int = 8

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base or self.factor < 1 or self.max_attempts < 1:
            raise ValueError(f"invalid retry policy {self!r}")

    def ceiling(self, failures: int) -> timedelta:
        """The largest delay after `failures` (>= 1) failed attempts."""
        if failures < 1:
            raise ValueError("failures counts from 1")
        # Compare exponents, not products, so a large attempt count cannot overflow.
        seconds = self.base.total_seconds() * self.factor ** min(failures - 1, 64)
        return min(self.cap, timedelta(seconds=min(seconds, self.cap.total_seconds())))

    def backoff(self, failures: int, rng: random.Random) -> timedelta:
        """A jittered delay after `failures` failed attempts."""
        ceiling = self.ceiling(failures)
        return ceiling / 2 + ceiling / 2 * rng.random()

    def after_failure(
        self, failures: int, now: datetime, rng: random.Random, *, retriable: bool = True
    ) -> Retry | Dead:
        """What to do once `failures` attempts (this one included) have failed at `now`."""
        if not retriable or failures >= self.max_attempts:
            return Dead(failures)
        return Retry(now + self.backoff(failures, rng))
