"""Vital checks from a requirement's expected frequency, in the patient's time zone, DST-safe.

`expected_times` are wall-clock times in the patient's zone: 08:00 stays 08:00 local across a DST change (its
UTC instant moves). A time that does not exist that day (02:30 on a spring-forward day) falls to the instant
after the gap (03:30); a time that exists twice (01:30 on a fall-back day) is its first occurrence. Without
`expected_times`, `expected_per_day` asks for that many readings per local day (a 23- or 25-hour day on a DST
change), judged when the day ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from processors.adherence import Slot
from processors.identity import stable_id
from processors.requirements import Requirement

__all__ = ["expected_slots", "slot_key"]


def slot_key(patient_id: UUID, vital_type: str, local_date: date, local_time: time) -> str:
    """The scheduled event's idempotency key (the convention of migration 0150)."""
    return f"vital_check:{patient_id}:{vital_type}:{local_date.isoformat()}T{local_time.strftime('%H:%M')}"


def _instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    # fold=0 picks the first of two ambiguous instants and, for a time in a gap, the offset before the gap;
    # converting to UTC and back normalises the gap case to the real wall time after it.
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def expected_slots(
    patient_id: UUID, timezone: str, versions: Iterable[Requirement], start: datetime, end: datetime
) -> list[Slot]:
    """Every check of these requirement versions whose window ends after `start` and starts by `end`.

    Each check belongs to the version effective at its scheduled instant.
    """
    zone = ZoneInfo(timezone)
    first = (start - timedelta(days=1)).astimezone(zone).date()
    last = (end + timedelta(days=1)).astimezone(zone).date()
    found: dict[str, Slot] = {}
    scheduled = [v for v in versions if v.has_schedule]
    day = first
    while day <= last:
        for version in scheduled:
            for slot in _day_slots(patient_id, timezone, zone, version, day):
                if version.covers(slot.scheduled_for) and slot.window_end > start and slot.window_start <= end:
                    found.setdefault(slot.key, slot)
        day += timedelta(days=1)
    return sorted(found.values(), key=lambda s: (s.scheduled_for, s.key))


def _day_slots(patient_id: UUID, timezone: str, zone: ZoneInfo, version: Requirement, day: date) -> list[Slot]:
    if version.expected_times:
        half = timedelta(minutes=version.expected_window_minutes)
        slots = []
        for at in version.expected_times:
            instant = _instant(day, at, zone)
            slots.append(_slot(patient_id, timezone, version, day, at, instant, instant - half, instant + half, 1))
        return slots
    assert version.expected_per_day is not None
    midnight = _instant(day, time(0), zone)
    next_midnight = _instant(day + timedelta(days=1), time(0), zone)
    return [
        _slot(
            patient_id, timezone, version, day, time(0), midnight, midnight, next_midnight,
            version.expected_per_day, quota=True,
        )
    ]  # fmt: skip


def _slot(
    patient_id: UUID,
    timezone: str,
    version: Requirement,
    day: date,
    at: time,
    instant: datetime,
    window_start: datetime,
    window_end: datetime,
    expected: int,
    *,
    quota: bool = False,
) -> Slot:
    key = slot_key(patient_id, version.vital_type, day, at)
    return Slot(
        slot_id=stable_id(instant, key),
        key=key,
        requirement_id=version.id,
        requirement_version=version.version,
        vital_type_id=version.vital_type_id,
        vital_type=version.vital_type,
        timezone=timezone,
        local_date=day,
        local_time=at,
        scheduled_for=instant,
        window_start=window_start,
        window_end=window_end,
        expected_count=expected,
        quota=quota,
    )
