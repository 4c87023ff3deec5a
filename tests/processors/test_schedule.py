"""Vital checks in the patient's zone: wall-clock times survive DST changes, gaps and repeated hours."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from uuid import uuid4

from processors.requirements import Requirement
from processors.schedule import expected_slots

PATIENT = uuid4()


def bp(*times: str, per_day: int | None = None, window: int = 60) -> Requirement:
    return Requirement(
        id=uuid4(),
        vital_type_id=2,
        vital_type="systolic_bp",
        unit="mm[Hg]",
        version=1,
        effective_from=datetime(2026, 1, 1, tzinfo=UTC),
        expected_per_day=per_day if per_day is not None else len(times),
        expected_times=tuple(time.fromisoformat(t) for t in times),
        expected_window_minutes=window,
    )


def test_local_times_keep_their_wall_clock_across_spring_forward() -> None:
    slots = expected_slots(
        PATIENT, "America/New_York", [bp("08:00", "20:00")],
        datetime(2026, 3, 7, 0, tzinfo=UTC), datetime(2026, 3, 9, 23, tzinfo=UTC),
    )  # fmt: skip
    by_local = {f"{s.local_date}T{s.local_time:%H:%M}": s.scheduled_for for s in slots}
    assert by_local["2026-03-07T08:00"] == datetime(2026, 3, 7, 13, tzinfo=UTC)  # EST, UTC-5
    assert by_local["2026-03-08T08:00"] == datetime(2026, 3, 8, 12, tzinfo=UTC)  # EDT, UTC-4
    assert by_local["2026-03-08T20:00"] == datetime(2026, 3, 9, 0, tzinfo=UTC)
    for slot in slots:
        assert slot.window_end - slot.window_start == timedelta(hours=2)
        assert slot.key == f"vital_check:{PATIENT}:systolic_bp:{slot.local_date}T{slot.local_time:%H:%M}"


def test_a_time_in_the_gap_moves_after_it_and_a_repeated_time_is_its_first_occurrence() -> None:
    spring = expected_slots(
        PATIENT, "America/Chicago", [bp("02:30")],
        datetime(2026, 3, 8, 0, tzinfo=UTC), datetime(2026, 3, 8, 23, tzinfo=UTC),
    )  # fmt: skip
    (gap,) = [s for s in spring if str(s.local_date) == "2026-03-08"]
    # 02:30 does not exist in Chicago on 2026-03-08: 02:30 CST would be 08:30 UTC, which is 03:30 CDT.
    assert gap.scheduled_for == datetime(2026, 3, 8, 8, 30, tzinfo=UTC)
    autumn = expected_slots(
        PATIENT, "America/Chicago", [bp("01:30")],
        datetime(2026, 11, 1, 0, tzinfo=UTC), datetime(2026, 11, 1, 23, tzinfo=UTC),
    )  # fmt: skip
    (repeated,) = [s for s in autumn if str(s.local_date) == "2026-11-01"]
    assert repeated.scheduled_for == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # 01:30 CDT, the first one


def test_a_daily_quota_spans_the_local_day_even_when_it_has_23_hours() -> None:
    slots = expected_slots(
        PATIENT, "Europe/Berlin", [bp(per_day=3)],
        datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, tzinfo=UTC),
    )  # fmt: skip
    (day,) = [s for s in slots if str(s.local_date) == "2026-03-29"]
    assert day.quota and day.expected_count == 3
    assert day.window_start == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert day.window_end - day.window_start == timedelta(hours=23)


def test_each_check_belongs_to_the_version_effective_at_its_time() -> None:
    first = bp("08:00")
    first = Requirement(**{**{f: getattr(first, f) for f in Requirement.__dataclass_fields__},
                           "effective_to": datetime(2026, 3, 10, 18, tzinfo=UTC)})  # fmt: skip
    second = Requirement(**{**{f: getattr(first, f) for f in Requirement.__dataclass_fields__},
                            "id": uuid4(), "version": 2, "effective_from": datetime(2026, 3, 10, 18, tzinfo=UTC),
                            "effective_to": None, "expected_times": (time(9),)})  # fmt: skip
    slots = expected_slots(
        PATIENT, "UTC", [first, second], datetime(2026, 3, 10, 0, tzinfo=UTC), datetime(2026, 3, 12, 0, tzinfo=UTC)
    )
    assert [(str(s.local_date), s.local_time.hour, s.requirement_version) for s in slots] == [
        ("2026-03-10", 8, 1),
        ("2026-03-11", 9, 2),
    ]
