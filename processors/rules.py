"""The rules of a requirement over one vital type's window of readings, evaluated at one position.

A window is the readings sorted by measurement time. For one direction, `track` gives each position's breach level
(None, warning or critical) and whether it is back inside by the hysteresis margin; `breach_at` and `clears_at`
then apply k-of-n, sustained-duration, count and quiet-time rules at a position, using only that position and the
readings before it, so the answer does not depend on arrival order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from processors.alerts import Direction, Rule, Severity
from processors.requirements import Requirement
from processors.state import Sample

__all__ = ["Breach", "Track", "breach_at", "clears_at", "track"]

_TREND = (Direction.RISE, Direction.FALL)


@dataclass(frozen=True, slots=True)
class Track:
    """One direction over a window: per position, the level, whether inside, and the amount judged."""

    direction: Direction
    levels: tuple[Severity | None, ...]
    inside: tuple[bool, ...]
    # The reading's value, or for a trend the change over the trend window ending at that reading.
    amounts: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Breach:
    """A rule satisfied at a position: at which severity, by which rule, and the readings that satisfy it."""

    severity: Severity
    rule: Rule
    positions: tuple[int, ...]


def track(samples: Sequence[Sample], requirement: Requirement, direction: Direction) -> Track:
    if direction in _TREND:
        return _trend_track(samples, requirement, direction)
    return Track(
        direction=direction,
        levels=tuple(requirement.level(s.value, direction) for s in samples),
        inside=tuple(requirement.inside(s.value, direction) for s in samples),
        amounts=tuple(s.value for s in samples),
    )


def _trend_track(samples: Sequence[Sample], requirement: Requirement, direction: Direction) -> Track:
    assert requirement.trend_delta is not None and requirement.trend_window_hours is not None
    delta = abs(requirement.trend_delta)
    window = timedelta(hours=requirement.trend_window_hours)
    rising = direction is Direction.RISE
    # Sliding extreme (min for a rise, max for a fall) over [t - window, t]: a monotonic deque of positions.
    extremes: deque[int] = deque()
    changes: list[float] = []
    start = 0
    for i, sample in enumerate(samples):
        while extremes and (
            samples[extremes[-1]].value >= sample.value if rising else samples[extremes[-1]].value <= sample.value
        ):
            extremes.pop()
        extremes.append(i)
        while samples[start].measured_at < sample.measured_at - window:
            start += 1
        while extremes[0] < start:
            extremes.popleft()
        base = samples[extremes[0]].value
        changes.append(sample.value - base if rising else base - sample.value)
    return Track(
        direction=direction,
        levels=tuple(Severity.WARNING if c >= delta else None for c in changes),
        inside=tuple(c <= delta - requirement.hysteresis_margin for c in changes),
        amounts=tuple(changes),
    )


def breach_at(t: Track, samples: Sequence[Sample], index: int, requirement: Requirement) -> Breach | None:
    """The most severe breach the requirement's rules see at `index`, if the reading there breaches at all."""
    level = t.levels[index]
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
        level = t.levels[i]
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
    if not t.inside[index] or samples[index].measured_at <= after:
        return False
    start = index
    while start > 0 and t.inside[start - 1] and samples[start - 1].measured_at > after:
        start -= 1
    if requirement.clears_by_count and index - start + 1 >= requirement.clear_count:
        return True
    return requirement.clear_minutes is not None and now - samples[start].measured_at >= timedelta(
        minutes=requirement.clear_minutes
    )
