"""The platform seed: idempotent, DST-correct vital checks keyed as the processors key them, consistent plans."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg

from scripts.seed_platform import Schedule, local_days, seed_platform, vital_checks
from tests import factories
from tests.factories import Organization

Conn = psycopg.Connection[Any]
# A week across the US spring-forward change (2026-03-08).
NOW = datetime(2026, 3, 5, 18, 0, tzinfo=UTC)


def test_checks_keep_local_time_across_dst_and_quota_days_span_the_local_day() -> None:
    patient = uuid4()
    days = local_days(NOW, "America/Chicago")
    assert days[0] == date(2026, 3, 5)
    assert len(days) == 7
    twice = Schedule(uuid4(), patient, 2, "systolic_bp", 2, (time(8), time(20)), 120)
    checks = list(vital_checks(twice, "America/Chicago", days))
    assert len(checks) == 14
    mornings = {c.local_date: c.scheduled_for.time() for c in checks if c.local_time == time(8)}
    assert mornings[date(2026, 3, 7)] == time(14, 0)  # CST, UTC-6
    assert mornings[date(2026, 3, 8)] == time(13, 0)  # CDT, UTC-5
    first = checks[0]
    assert first.key == f"vital_check:{patient}:systolic_bp:2026-03-05T08:00"
    assert first.window_end - first.window_start == timedelta(hours=4)

    quota = Schedule(uuid4(), patient, 7, "body_weight", 1, (), 60)
    (spring_forward,) = [c for c in vital_checks(quota, "America/Chicago", days) if c.local_date == date(2026, 3, 8)]
    assert spring_forward.local_time == time(0)
    assert spring_forward.window_end - spring_forward.window_start == timedelta(hours=23)


def test_seeding_twice_adds_nothing_and_matches_plans_consents_and_schedules(db: Conn, org: Organization) -> None:
    patients = [factories.create_patient(db, org.id, timezone="America/Chicago") for _ in range(2)]
    for p in patients:
        plan = factories.create_care_plan(db, p, template_code="hypertension_rpm")
        factories.create_requirement(
            db, p, "systolic_bp", care_plan_id=plan, expected_per_day=2, expected_times=[time(8), time(20)]
        )
        factories.create_device(db, org.id, assign_to=p)

    first = seed_platform(db, [org.slug], now=NOW)
    second = seed_platform(db, [org.slug], now=NOW)
    assert first == second
    # Per patient: 13 vital checks (7 days x 2, less this morning's, whose window closed at 09:00 local, before
    # the seed ran at noon: never asked of the patient, so never missed), 7 medication reminders, 1 follow-up.
    assert first["scheduled_events"] == 2 * (13 + 7 + 1)
    assert first["patient_subscriptions"] == 3  # the first patient also has a cancelled, earlier one
    assert first["user_devices"] == 1  # patients only: every other one has the app

    by_patient = db.execute(
        "SELECT p.mrn, sp.code, sp.max_devices_per_patient, s.status FROM patient_subscriptions s"
        " JOIN service_plans sp ON sp.id = s.service_plan_id JOIN patients p ON p.id = s.patient_id"
        " WHERE s.organization_id = %s AND s.ended_at IS NULL",
        (org.id,),
    ).fetchall()
    assert [(code, limit, status) for _, code, limit, status in by_patient] == [
        ("rpm_essential", 1, "active"),
        ("rpm_essential", 1, "active"),
    ]

    first_patient = sorted(patients, key=lambda p: str(mrn(db, p.id)))[0]
    consents = db.execute(
        "SELECT consent_type::text FROM patient_consents WHERE patient_id = %s AND has_consent(patient_id,"
        " consent_type, %s) ORDER BY 1",
        (first_patient.id, NOW),
    ).fetchall()
    assert [c for (c,) in consents] == ["privacy_notice", "remote_monitoring", "sms_notifications", "telehealth"]

    checks = db.execute(
        "SELECT count(*), count(DISTINCT requirement_id), min(local_date), max(local_date) FROM scheduled_events"
        " WHERE patient_id = %s AND kind = 'vital_check' AND status = 'scheduled'",
        (first_patient.id,),
    ).fetchone()
    assert checks == (13, 1, date(2026, 3, 5), date(2026, 3, 11))
    today = db.execute(
        "SELECT local_time FROM scheduled_events WHERE patient_id = %s AND kind = 'vital_check'"
        " AND local_date = %s ORDER BY 1",
        (first_patient.id, date(2026, 3, 5)),
    ).fetchall()
    assert today == [(time(20),)]


def mrn(db: Conn, patient_id: UUID) -> str:
    row = db.execute("SELECT mrn FROM patients WHERE id = %s", (patient_id,)).fetchone()
    assert row is not None
    return str(row[0])
