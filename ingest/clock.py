"""Clocks are injected: the wall clock stamps arrivals, the monotonic clock ages batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""

Monotonic = Callable[[], float]
"""Returns seconds from an arbitrary origin that never goes backwards."""


def utc_now() -> datetime:
    return datetime.now(UTC)


monotonic: Monotonic = time.monotonic
