"""When to flush: a batch is written once it holds `max_size` items or its oldest item is `max_age_s` old."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_size: int
    max_age_s: float

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_age_s < 0:
            raise ValueError("a batch holds at least one item and has a non-negative age limit")

    def is_full(self, size: int) -> bool:
        return size >= self.max_size

    def deadline(self, first_at: float) -> float:
        """The monotonic time by which a batch whose first item arrived at `first_at` must be flushed."""
        return first_at + self.max_age_s

    def is_due(self, size: int, first_at: float | None, now: float) -> bool:
        """True when a non-empty batch must be flushed now."""
        if size == 0 or first_at is None:
            return False
        return self.is_full(size) or now >= self.deadline(first_at)
