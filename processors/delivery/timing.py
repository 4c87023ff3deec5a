"""Injected clocks: the wall clock decides due times, the monotonic one measures durations and refills buckets."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "Monotonic", "monotonic", "utc_now"]

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""

Monotonic = Callable[[], float]


def utc_now() -> datetime:
    return datetime.now(UTC)


monotonic: Monotonic = time.monotonic
