"""Per-channel rate limits as token buckets on an injected monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from processors.delivery.notification import Channel
from processors.delivery.timing import Monotonic

__all__ = ["Rate", "RateLimits", "TokenBucket"]

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` sustained, up to `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"invalid rate {self!r}")


class TokenBucket:
    """Holds up to `rate.burst` tokens, refilled at `rate.per_second`; one token per message."""

    __slots__ = ("_monotonic", "_stamp", "_tokens", "rate")

    def __init__(self, rate: Rate, monotonic: Monotonic = time.monotonic) -> None:
        self.rate = rate
        self._monotonic = monotonic
        self._tokens = float(rate.burst)
        self._stamp = monotonic()

    def _refill(self) -> None:
        now = self._monotonic()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self.rate.burst), self._tokens + elapsed * self.rate.per_second)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self) -> float:
        """Takes a token and returns 0.0, or takes nothing and returns the seconds until one is available."""
        self._refill()
        # Refills are sums of float increments; without the epsilon 20 x 0.05 would fall short of one token.
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        return (1.0 - self._tokens) / self.rate.per_second


class RateLimits:
    """One bucket per channel; a channel without a configured rate is not limited."""

    __slots__ = ("_buckets",)

    def __init__(self, rates: Mapping[Channel, Rate], monotonic: Monotonic = time.monotonic) -> None:
        self._buckets = {channel: TokenBucket(rate, monotonic) for channel, rate in rates.items()}

    def take(self, channel: Channel) -> float:
        """As `TokenBucket.take` for `channel`'s bucket (0.0 when the channel is unlimited)."""
        bucket = self._buckets.get(channel)
        return 0.0 if bucket is None else bucket.take()
