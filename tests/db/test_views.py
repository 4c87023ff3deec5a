"""Views for common queries: latest vitals, active care teams, devices now, patients per template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests import factories
from tests.db.conftest import RoleConnect
from tests.factories import Organization, Patient
from tests.roles import Role

Conn = psycopg.Connection[Any]


def insert_reading(
    conn: Conn, device: factories.Device, patient: Patient, code: str, value: float, at: datetime
) -> None:
    conn.execute(
        "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value,"
        " original_value, original_unit, measured_at, received_at, message_id)"
        " SELECT uuid_generate_v7(), %s, %s, %s, id, %s, %s, canonical_unit, %s, now(), 'm-1'"
        " FROM vital_types WHERE code = %s",
        (patient.organization_id, patient.id, device.id, value, value, at, code),
    )


@pytest.mark.parametrize("role", ["app", "processor"])
def test_latest_vitals_has_the_newest_reading_per_patient_and_type(
    db: Conn, org: Organization, patient: Patient, connect_as: RoleConnect, role: Role
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    now = datetime.now(UTC).replace(microsecond=0)
    insert_reading(db, device, patient, "systolic_bp", 150, now - timedelta(days=2))
    insert_reading(db, device, patient, "systolic_bp", 131, now - timedelta(hours=1))
    insert_reading(db, device, patient, "systolic_bp", 140, now - timedelta(hours=3))
    insert_reading(db, device, patient, "heart_rate", 72, now - timedelta(days=3))
    with connect_as(role, org.id) as conn:
        rows = conn.execute(
            "SELECT vital_type, value, unit, measured_at FROM latest_vitals WHERE patient_id = %s ORDER BY 1",
            (patient.id,),
        ).fetchall()
    assert rows == [
        ("heart_rate", 72.0, "/min", now - timedelta(days=3)),
        ("systolic_bp", 131.0, "mm[Hg]", now - timedelta(hours=1)),
    ]


def test_active_care_teams_leaves_out_ended_and_future_memberships(
    db: Conn, org: Organization, connect_as: RoleConnect
) -> None:
    patient = factories.create_patient(db, org.id)
    now = datetime.now(UTC)
    current = factories.create_provider(db, org.id, provider_type="physician")
    former = factories.create_provider(db, org.id)
    future = factories.create_provider(db, org.id)
    factories.add_to_care_team(db, patient, current, role="primary_physician", is_primary=True)
    factories.add_to_care_team(
        db, patient, former, started_at=now - timedelta(days=60), ended_at=now - timedelta(days=1)
    )
    factories.add_to_care_team(db, patient, future, started_at=now + timedelta(days=7))
    with connect_as("app", org.id) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT provider_id, role, is_primary, provider_type, first_name FROM active_care_teams"
            " WHERE patient_id = %s",
            (patient.id,),
        ).fetchall()
    assert rows == [
        {
            "provider_id": current.id,
            "role": "primary_physician",
            "is_primary": True,
            "provider_type": "physician",
            "first_name": "Test",
        }
    ]


@pytest.mark.parametrize("role", ["app", "processor"])
def test_device_overview_shows_the_current_patient_and_last_seen_age(
    db: Conn, org: Organization, connect_as: RoleConnect, role: Role
) -> None:
    first = factories.create_patient(db, org.id)
    second = factories.create_patient(db, org.id)
    now = datetime.now(UTC)
    device = factories.create_device(db, org.id, assign_to=first, since=now - timedelta(days=10))
    db.execute(
        "UPDATE device_assignments SET assigned_to = %s WHERE device_id = %s", (now - timedelta(days=2), device.id)
    )
    db.execute(
        "INSERT INTO device_assignments (organization_id, device_id, patient_id, assigned_from)"
        " VALUES (%s, %s, %s, %s)",
        (org.id, device.id, second.id, now - timedelta(days=2)),
    )
    db.execute("UPDATE devices SET last_seen_at = now() - interval '90 minutes' WHERE id = %s", (device.id,))
    idle = factories.create_device(db, org.id)
    with connect_as(role, org.id) as conn:
        rows = conn.execute(
            "SELECT device_id, patient_id, last_seen_age > interval '89 minutes',"
            " last_seen_age < interval '91 minutes' FROM device_overview WHERE organization_id = %s ORDER BY serial",
            (org.id,),
        ).fetchall()
    assert sorted(rows, key=str) == sorted([(device.id, second.id, True, True), (idle.id, None, None, None)], key=str)


def test_care_plan_template_patients_counts_by_status(db: Conn, org: Organization, connect_as: RoleConnect) -> None:
    for status in ("active", "active", "paused", "completed"):
        factories.create_care_plan(db, factories.create_patient(db, org.id), template_code="copd_rpm", status=status)
    with connect_as("app", org.id) as conn:
        row = conn.execute(
            "SELECT active_patients, paused_patients, all_patients FROM care_plan_template_patients"
            " WHERE template_code = 'copd_rpm' AND organization_id = %s",
            (org.id,),
        ).fetchone()
    assert row == (2, 1, 4)
