"""Capped exponential backoff with full jitter (pure; the random source is injected)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays for successive failed attempts: uniform in [0, min(cap, initial * 2**n)], reset after a success."""

    def __init__(self, initial: float, cap: float, uniform: Callable[[float, float], float] = random.uniform) -> None:
        if initial <= 0 or cap < initial:
            raise ValueError("backoff needs 0 < initial <= cap")
        self._initial = initial
        self._cap = cap
        self._uniform = uniform
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self._cap, self._initial * 2 ** min(self.attempts, 32))
        self.attempts += 1
        return self._uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0
