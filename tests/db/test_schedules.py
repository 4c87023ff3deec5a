"""scheduled_events and adherence_records: local-time semantics, idempotent generation, outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests import factories
from tests.db.conftest import RoleConnect
from tests.factories import Organization, Patient

Conn = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class Check:
    key: str
    scheduled_for: datetime


def planned(local_date: date, local_time: time, timezone: str) -> datetime:
    """The instant of a wall-clock time in a zone, as the processors compute it (zoneinfo, fold=0)."""
    return datetime.combine(local_date, local_time, ZoneInfo(timezone)).astimezone(UTC)


def upsert_vital_check(
    conn: Conn,
    patient: Patient,
    local_date: date,
    local_time: time,
    *,
    vital_type: str = "systolic_bp",
    scheduled_for: datetime | None = None,
    window: timedelta = timedelta(hours=1),
) -> UUID | None:
    """Inserts a generated vital check unless its key exists; returns the new id or None."""
    at = scheduled_for or planned(local_date, local_time, patient.timezone)
    key = f"vital_check:{patient.id}:{vital_type}:{local_date.isoformat()}T{local_time:%H:%M}"
    row = conn.execute(
        "INSERT INTO scheduled_events (organization_id, patient_id, kind, title, vital_type_id, scheduled_for,"
        " timezone, local_date, local_time, window_start, window_end, idempotency_key)"
        " SELECT %s, %s, 'vital_check', 'Blood pressure', id, %s, %s, %s, %s, %s, %s, %s"
        " FROM vital_types WHERE code = %s"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        (
            patient.organization_id,
            patient.id,
            at,
            patient.timezone,
            local_date,
            local_time,
            at - window,
            at + window,
            key,
            vital_type,
        ),
    ).fetchone()
    return None if row is None else UUID(str(row[0]))


def record_outcome(conn: Conn, patient: Patient, event_id: UUID, status: str, **columns: Any) -> None:
    """Upserts the event's single adherence record, as the processors do."""
    values = {"status": status, "source": "device" if status != "missed" else "system", **columns}
    names = ", ".join(values)
    placeholders = ", ".join(f"%({n})s" for n in values)
    updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in values)
    conn.execute(
        f"INSERT INTO adherence_records (organization_id, patient_id, scheduled_event_id, {names})"
        f" VALUES (%(organization_id)s, %(patient_id)s, %(event_id)s, {placeholders})"
        f" ON CONFLICT (scheduled_event_id) DO UPDATE SET {updates}",
        {"organization_id": patient.organization_id, "patient_id": patient.id, "event_id": event_id, **values},
    )


def event_status(conn: Conn, event_id: UUID) -> str:
    row = conn.execute("SELECT status FROM scheduled_events WHERE id = %s", (event_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_generating_the_same_vital_check_twice_stores_it_once(
    db: Conn, org: Organization, connect_as: RoleConnect
) -> None:
    patient = factories.create_patient(db, org.id, timezone="Europe/Berlin")
    day = date.today() + timedelta(days=1)
    with connect_as("processor") as conn:
        first = upsert_vital_check(conn, patient, day, time(8, 0))
        again = upsert_vital_check(conn, patient, day, time(8, 0))
        evening = upsert_vital_check(conn, patient, day, time(20, 0))
    assert first is not None
    assert again is None
    assert evening is not None
    rows = db.execute(
        "SELECT local_time, scheduled_for, status FROM scheduled_events WHERE patient_id = %s ORDER BY 1",
        (patient.id,),
    ).fetchall()
    assert rows == [
        (time(8, 0), planned(day, time(8, 0), "Europe/Berlin"), "scheduled"),
        (time(20, 0), planned(day, time(20, 0), "Europe/Berlin"), "scheduled"),
    ]


def test_the_instant_must_be_the_wall_clock_time_in_the_patients_zone(db: Conn, org: Organization) -> None:
    patient = factories.create_patient(db, org.id, timezone="America/Chicago")
    # 08:00 computed as if the patient lived in UTC: five or six hours off.
    with pytest.raises(psycopg.errors.CheckViolation, match="scheduled_events_local_time"):
        upsert_vital_check(
            db, patient, date(2026, 3, 10), time(8, 0), scheduled_for=datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
        )
    # Both sides of the spring-forward gap: 02:30 does not exist on 2026-03-08 and is stored as 03:30 CDT.
    gap = upsert_vital_check(db, patient, date(2026, 3, 8), time(2, 30))
    before = upsert_vital_check(db, patient, date(2026, 3, 7), time(2, 30))
    assert gap is not None
    assert before is not None
    instants = dict(
        db.execute(
            "SELECT local_date, scheduled_for AT TIME ZONE timezone FROM scheduled_events WHERE patient_id = %s",
            (patient.id,),
        ).fetchall()
    )
    assert instants == {
        date(2026, 3, 8): datetime(2026, 3, 8, 3, 30),
        date(2026, 3, 7): datetime(2026, 3, 7, 2, 30),
    }


def test_a_vital_check_names_its_vital_type(db: Conn, org: Organization) -> None:
    patient = factories.create_patient(db, org.id)
    at = datetime.now(UTC)
    with pytest.raises(psycopg.errors.CheckViolation, match="scheduled_events_vital_check_type"):
        db.execute(
            "INSERT INTO scheduled_events (organization_id, patient_id, kind, title, scheduled_for, timezone,"
            " local_date, local_time, window_start, window_end)"
            " VALUES (%s, %s, 'vital_check', 'Check', %s, 'UTC', %s, %s, %s, %s)",
            (org.id, patient.id, at, at.date(), at.time(), at, at),
        )


def test_the_outcome_sets_the_event_status_and_a_late_reading_upgrades_missed(
    db: Conn, org: Organization, connect_as: RoleConnect
) -> None:
    patient = factories.create_patient(db, org.id)
    day = date.today() - timedelta(days=1)
    with connect_as("processor") as conn:
        event_id = upsert_vital_check(conn, patient, day, time(9, 0))
        assert event_id is not None
        record_outcome(conn, patient, event_id, "missed")
        assert event_status(conn, event_id) == "missed"

        measured_at = planned(day, time(12, 0), patient.timezone)
        record_outcome(
            conn,
            patient,
            event_id,
            "late",
            occurred_at=measured_at,
            reading_id=UUID(int=1),
            reading_measured_at=measured_at,
            received_count=1,
        )
        assert event_status(conn, event_id) == "late"
        rows = conn.execute(
            "SELECT status, reading_measured_at FROM adherence_records WHERE scheduled_event_id = %s", (event_id,)
        ).fetchall()
    assert rows == [("late", measured_at)]


def test_an_outcome_must_belong_to_the_events_patient(db: Conn, org: Organization) -> None:
    patient = factories.create_patient(db, org.id)
    other = factories.create_patient(db, org.id)
    event_id = upsert_vital_check(db, patient, date.today(), time(8, 0))
    assert event_id is not None
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        record_outcome(db, other, event_id, "missed")


@pytest.mark.parametrize(
    ("status", "columns", "constraint"),
    [
        ("completed", {}, "adherence_records_occurred"),
        ("missed", {"received_count": 1}, "adherence_records_missed"),
        (
            "partial",
            {"occurred_at": datetime(2026, 1, 1, tzinfo=UTC), "received_count": 1},
            "adherence_records_partial",
        ),
    ],
)
def test_an_outcome_is_consistent_with_its_status(
    db: Conn, org: Organization, status: str, columns: dict[str, Any], constraint: str
) -> None:
    patient = factories.create_patient(db, org.id)
    event_id = upsert_vital_check(db, patient, date.today(), time(8, 0))
    assert event_id is not None
    with pytest.raises(psycopg.errors.CheckViolation, match=constraint):
        record_outcome(db, patient, event_id, status, **columns)


def test_the_app_may_cancel_but_not_delete_an_event(db: Conn, org: Organization, connect_as: RoleConnect) -> None:
    patient = factories.create_patient(db, org.id)
    event_id = upsert_vital_check(db, patient, date.today() + timedelta(days=2), time(8, 0))
    with connect_as("app", org.id) as conn:
        conn.execute(
            "UPDATE scheduled_events SET status = 'cancelled', cancelled_at = now(), cancel_reason = 'travel'"
            " WHERE id = %s",
            (event_id,),
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM scheduled_events WHERE id = %s", (event_id,))
    assert event_id is not None
    assert event_status(db, event_id) == "cancelled"
