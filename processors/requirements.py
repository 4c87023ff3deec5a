"""One version of a `vital_requirements` row and the threshold arithmetic on it.

Thresholds are the limits of the acceptable range: a value strictly beyond a limit breaches it (so a limit of 140
accepts 140 and flags 140.5). A value is back inside once it is within the least severe limit by the hysteresis
margin; values between the limit and the margin are neither breaching nor clearing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from uuid import UUID

from processors.alerts import Direction, Severity

__all__ = ["Requirement"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """The rule set for one patient and vital type, as of one version (column meanings: 0030_vitals.sql)."""

    id: UUID
    vital_type_id: int
    vital_type: str
    unit: str
    version: int
    effective_from: datetime
    effective_to: datetime | None = None
    warning_low: float | None = None
    warning_high: float | None = None
    critical_low: float | None = None
    critical_high: float | None = None
    breach_k: int = 1
    breach_n: int = 1
    sustained_minutes: int | None = None
    hysteresis_margin: float = 0.0
    clear_count: int = 1
    clear_minutes: int | None = None
    cooldown_minutes: int = 60
    trend_window_hours: int | None = None
    trend_delta: float | None = None
    expected_per_day: int | None = None
    expected_times: tuple[time, ...] = ()
    expected_window_minutes: int = 60

    def covers(self, at: datetime) -> bool:
        """Whether this version was the effective one at `at`."""
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)

    @property
    def directions(self) -> tuple[Direction, ...]:
        """The directions this version can raise an episode in."""
        found: list[Direction] = []
        if self.warning_low is not None or self.critical_low is not None:
            found.append(Direction.LOW)
        if self.warning_high is not None or self.critical_high is not None:
            found.append(Direction.HIGH)
        if self.trend_delta is not None and self.trend_delta != 0:
            found.append(Direction.RISE if self.trend_delta > 0 else Direction.FALL)
        return tuple(found)

    @property
    def counts_breaches(self) -> bool:
        """k-of-n applies unless the requirement asks only for a sustained duration (n = 1 with minutes set)."""
        return self.breach_n > 1 or self.sustained_minutes is None

    @property
    def clears_by_count(self) -> bool:
        """Likewise for clearing: clear_count applies unless only clear_minutes was asked for."""
        return self.clear_count > 1 or self.clear_minutes is None

    @property
    def cooldown(self) -> timedelta:
        return timedelta(minutes=self.cooldown_minutes)

    @property
    def has_schedule(self) -> bool:
        return bool(self.expected_times) or self.expected_per_day is not None

    def threshold(self, direction: Direction, severity: Severity) -> float | None:
        """The limit of `direction` at `severity` (trend: the delta), or None when the version has none."""
        if direction is Direction.LOW:
            return self.critical_low if severity is Severity.CRITICAL else self.warning_low
        if direction is Direction.HIGH:
            return self.critical_high if severity is Severity.CRITICAL else self.warning_high
        return None if severity is Severity.CRITICAL or self.trend_delta is None else abs(self.trend_delta)

    def level(self, value: float, direction: Direction) -> Severity | None:
        """How severely `value` breaches the `direction` limits (threshold directions only)."""
        if direction is Direction.HIGH:
            if self.critical_high is not None and value > self.critical_high:
                return Severity.CRITICAL
            if self.warning_high is not None and value > self.warning_high:
                return Severity.WARNING
        elif direction is Direction.LOW:
            if self.critical_low is not None and value < self.critical_low:
                return Severity.CRITICAL
            if self.warning_low is not None and value < self.warning_low:
                return Severity.WARNING
        return None

    def inside(self, value: float, direction: Direction) -> bool:
        """Whether `value` is back inside the `direction` limit by the hysteresis margin."""
        if direction is Direction.HIGH:
            bound = self.warning_high if self.warning_high is not None else self.critical_high
            return bound is None or value <= bound - self.hysteresis_margin
        if direction is Direction.LOW:
            bound = self.warning_low if self.warning_low is not None else self.critical_low
            return bound is None or value >= bound + self.hysteresis_margin
        raise ValueError(f"{direction} is a trend direction")
