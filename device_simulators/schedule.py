"""When patients measure: nominal local times per device kind and condition, human jitter, forgotten days.

Times are local to the patient and converted to UTC through zoneinfo, so schedules stay right across DST changes
(a nominal time that does not exist on a spring-forward day moves forward by the gap).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from device_simulators.device import DeviceKind
from device_simulators.physiology import Condition

_DEFAULT_TIMES: dict[DeviceKind, tuple[str, ...]] = {
    DeviceKind.BP_CUFF: ("08:00", "20:00"),
    DeviceKind.SCALE: ("07:30",),
    DeviceKind.GLUCOMETER: ("07:00", "12:00", "17:00", "21:00"),
    DeviceKind.THERMOMETER: ("09:00",),
    DeviceKind.PULSE_OXIMETER: ("08:00", "20:00"),
    DeviceKind.RESPIRATORY_MONITOR: ("08:00", "14:00", "20:00"),
    DeviceKind.MULTI: ("08:00",),
}
# Matches the expected_times of the seeded care plan templates (migrations/0070).
_BY_CONDITION: dict[tuple[Condition, DeviceKind], tuple[str, ...]] = {
    (Condition.DIABETES, DeviceKind.BP_CUFF): ("08:00",),
    (Condition.COPD, DeviceKind.PULSE_OXIMETER): ("08:00", "14:00", "20:00"),
    # Frequent spot checks for heart failure: every four waking hours.
    (Condition.HEART_FAILURE, DeviceKind.PULSE_OXIMETER): ("06:00", "10:00", "14:00", "18:00", "22:00"),
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """Nominal local times, jitter (sd, bound) in minutes and the chance a patient skips one measurement."""

    times: tuple[time, ...]
    jitter_minutes: float = 12.0
    jitter_bound_minutes: float = 40.0
    skip_probability: float = 0.04


def schedule_for(kind: DeviceKind, condition: Condition, *, skip_probability: float = 0.04) -> Schedule:
    names = _BY_CONDITION.get((condition, kind), _DEFAULT_TIMES[kind])
    return Schedule(tuple(time.fromisoformat(n) for n in names), skip_probability=skip_probability)


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time; a time inside a DST gap is pushed forward by the gap."""
    naive = datetime.combine(day, at)
    aware = naive.replace(tzinfo=zone)
    roundtrip = aware.astimezone(UTC).astimezone(zone)
    if roundtrip.replace(tzinfo=None) != naive:  # nonexistent local time (spring forward)
        aware = (aware.astimezone(UTC)).astimezone(zone)
    return aware.astimezone(UTC)


def measurement_times(
    schedule: Schedule, timezone: str, start: datetime, end: datetime, key: str
) -> Iterator[datetime]:
    """Measurement instants (UTC, ascending) in [start, end).

    Each nominal slot draws its jitter and whether it is skipped from `key`, its day and its time alone, so two
    windows that overlap agree on every instant of the overlap.
    """
    zone = ZoneInfo(timezone)
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    while day <= last:
        for nominal in schedule.times:
            rng = random.Random(f"{key}:{day.isoformat()}:{nominal.isoformat()}")
            jitter = max(
                -schedule.jitter_bound_minutes,
                min(schedule.jitter_bound_minutes, rng.gauss(0, schedule.jitter_minutes)),
            )
            skipped = rng.random() < schedule.skip_probability
            at = local_instant(day, nominal, zone) + timedelta(minutes=jitter, seconds=rng.randrange(60))
            if not skipped and start <= at < end:
                yield at.replace(microsecond=0)
        day += timedelta(days=1)
