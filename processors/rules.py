"""The rules of a requirement over one vital type's window of readings, evaluated at one position.

A window is the readings sorted by measurement time. For one direction, `track` gives each position's breach level
(None, warning or critical) and whether it is back inside by the hysteresis margin; `breach_at` and `clears_at`
then apply k-of-n, sustained-duration, count and quiet-time rules at a position, using only that position and the
readings before it, so the answer does not depend on arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from processors.alerts import Direction, Rule, Severity
from processors.requirements import Requirement
from processors.state import Sample

__all__ = ["Breach", "Track", "breach_at", "clears_at", "track"]

_TREND = (Direction.RISE, Direction.FALL)


class Track:
    """One direction over a window, judged lazily: only the positions the rules look at are computed (a window
    may hold hundreds of readings; a rule looks at a handful)."""

    __slots__ = ("_amounts", "_inside", "_levels", "_requirement", "_samples", "_trend", "direction")

    def __init__(self, samples: Sequence[Sample], requirement: Requirement, direction: Direction) -> None:
        self.direction = direction
        self._samples = samples
        self._requirement = requirement
        trend = requirement.trend_delta
        # A trend direction the requirement no longer has judges every position inside.
        self._trend = direction in _TREND and trend is not None and (trend > 0) == (direction is Direction.RISE)
        self._amounts: dict[int, float] = {}
        self._levels: dict[int, Severity | None] = {}
        self._inside: dict[int, bool] = {}

    def amount(self, i: int) -> float:
        """The reading's value, or for a trend the change over the trend window ending at that reading."""
        found = self._amounts.get(i)
        if found is None:
            found = self._change(i) if self.direction in _TREND else self._samples[i].value
            self._amounts[i] = found
        return found

    def _change(self, i: int) -> float:
        if not self._trend:
            return 0.0
        assert self._requirement.trend_window_hours is not None
        since = self._samples[i].measured_at - timedelta(hours=self._requirement.trend_window_hours)
        value = self._samples[i].value
        extreme = value
        j = i
        while j > 0 and self._samples[j - 1].measured_at >= since:
            j -= 1
            other = self._samples[j].value
            extreme = min(extreme, other) if self.direction is Direction.RISE else max(extreme, other)
        return value - extreme if self.direction is Direction.RISE else extreme - value

    def level(self, i: int) -> Severity | None:
        if i not in self._levels:
            if self.direction in _TREND:
                delta = self._requirement.trend_delta
                hit = self._trend and delta is not None and self.amount(i) >= abs(delta)
                self._levels[i] = Severity.WARNING if hit else None
            else:
                self._levels[i] = self._requirement.level(self._samples[i].value, self.direction)
        return self._levels[i]

    def inside(self, i: int) -> bool:
        found = self._inside.get(i)
        if found is None:
            if self.direction in _TREND:
                delta = self._requirement.trend_delta
                found = (
                    not self._trend
                    or delta is None
                    or (self.amount(i) <= abs(delta) - self._requirement.hysteresis_margin)
                )
            else:
                found = self._requirement.inside(self._samples[i].value, self.direction)
            self._inside[i] = found
        return found


@dataclass(frozen=True, slots=True)
class Breach:
    """A rule satisfied at a position: at which severity, by which rule, and the readings that satisfy it."""

    severity: Severity
    rule: Rule
    positions: tuple[int, ...]


def track(samples: Sequence[Sample], requirement: Requirement, direction: Direction) -> Track:
    return Track(samples, requirement, direction)


def breach_at(t: Track, samples: Sequence[Sample], index: int, requirement: Requirement) -> Breach | None:
    """The most severe breach the requirement's rules see at `index`, if the reading there breaches at all."""
    level = t.level(index)
    if level is None:
        return None
    for severity in (Severity.CRITICAL, Severity.WARNING):
        if severity.rank > level.rank:
            continue
        found = _breach(t, samples, index, requirement, severity)
        if found is not None:
            return found
    return None


def _breach(
    t: Track, samples: Sequence[Sample], index: int, requirement: Requirement, severity: Severity
) -> Breach | None:
    def hits(i: int) -> bool:
        level = t.level(i)
        return level is not None and level.rank >= severity.rank

    if t.direction in _TREND:
        return Breach(severity, Rule.TREND, (index,))
    if requirement.counts_breaches:
        first = max(0, index - requirement.breach_n + 1)
        positions = tuple(i for i in range(first, index + 1) if hits(i))
        if len(positions) >= requirement.breach_k:
            return Breach(severity, Rule.THRESHOLD if requirement.breach_n == 1 else Rule.K_OF_N, positions)
    if requirement.sustained_minutes is not None:
        start = index
        while start > 0 and hits(start - 1):
            start -= 1
        span = samples[index].measured_at - samples[start].measured_at
        if span >= timedelta(minutes=requirement.sustained_minutes):
            return Breach(severity, Rule.SUSTAINED, tuple(range(start, index + 1)))
    return None


def clears_at(
    t: Track,
    samples: Sequence[Sample],
    index: int,
    requirement: Requirement,
    after: datetime,
    now: datetime,
) -> bool:
    """Whether an episode opened at `after` clears at `index`: the readings after it, up to `index`, are inside
    for `clear_count` readings in a row, or have been inside for `clear_minutes` as of `now`."""
    if not t.inside(index) or samples[index].measured_at <= after:
        return False
    start = index
    while start > 0 and samples[start - 1].measured_at > after and t.inside(start - 1):
        start -= 1
    if requirement.clears_by_count and index - start + 1 >= requirement.clear_count:
        return True
    return requirement.clear_minutes is not None and now - samples[start].measured_at >= timedelta(
        minutes=requirement.clear_minutes
    )
