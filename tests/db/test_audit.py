"""Audit triggers: every change to a sensitive table is logged with before/after, role and acting user."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from tests import factories
from tests.db.conftest import RoleConnect
from tests.factories import Organization, Patient
from tests.roles import RoleSettings

Conn = psycopg.Connection[Any]


def audit_rows(conn: Conn, entity_type: str, entity_id: UUID) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT action, db_role, actor_user_id, before, after, details FROM audit_logs"
        " WHERE entity_type = %s AND entity_id = %s ORDER BY occurred_at",
        (entity_type, entity_id),
    ).fetchall()


def test_an_app_update_records_before_after_role_and_actor(
    db: Conn, org: Organization, patient: Patient, connect_as: RoleConnect, role_settings: RoleSettings
) -> None:
    clinician = factories.create_user(db, org.id)
    with connect_as("app", org.id) as conn, conn.transaction():
        conn.execute("SELECT set_config('rpm.actor_user_id', %s, true)", (str(clinician),))
        conn.execute("UPDATE patients SET timezone = 'Europe/Paris' WHERE id = %s", (patient.id,))

    rows = audit_rows(db, "patients", patient.id)
    assert [r[0] for r in rows] == ["patients.insert", "patients.update"]
    action, db_role, actor, before, after, details = rows[-1]
    assert (action, db_role, actor) == ("patients.update", role_settings.postgres_user, clinician)
    assert before["timezone"] == "America/Chicago"
    assert after["timezone"] == "Europe/Paris"
    assert after["organization_id"] == str(org.id)
    assert details == {"source": "trigger", "changed": ["timezone", "updated_at"]}


def test_an_update_that_changes_nothing_is_not_logged(db: Conn, org: Organization) -> None:
    patient = factories.create_patient(db, org.id)
    db.execute("UPDATE patients SET timezone = timezone WHERE id = %s", (patient.id,))
    assert [r[0] for r in audit_rows(db, "patients", patient.id)] == ["patients.insert"]


def test_a_device_heartbeat_is_not_logged_and_its_credential_hash_never_is(
    db: Conn, org: Organization, connect_as: RoleConnect
) -> None:
    device = factories.create_device(db, org.id)
    with connect_as("ingest") as conn:
        conn.execute(
            "UPDATE devices SET last_seen_at = now(), connection_status = 'online' WHERE id = %s", (device.id,)
        )
    db.execute("UPDATE devices SET firmware_version = '9.9.9' WHERE id = %s", (device.id,))

    rows = audit_rows(db, "devices", device.id)
    assert [r[0] for r in rows] == ["devices.insert", "devices.update"]
    for _, _, _, before, after, _ in rows:
        for image in (before, after):
            assert image is None or image["credential_hash"] == "[redacted]"
    assert rows[-1][5]["changed"] == ["firmware_version", "updated_at"]


def test_a_malformed_actor_setting_is_kept_as_a_detail_without_failing_the_change(
    db: Conn, patient: Patient, connect_as: RoleConnect, role_settings: RoleSettings
) -> None:
    with connect_as("app", patient.organization_id) as conn, conn.transaction():
        conn.execute("SELECT set_config('rpm.actor_user_id', 'not-a-uuid', true)")
        conn.execute("UPDATE care_plans SET status = 'paused' WHERE patient_id = %s", (patient.id,))
    plan_id = db.execute("SELECT id FROM care_plans WHERE patient_id = %s", (patient.id,)).fetchone()
    assert plan_id is not None
    _, db_role, actor, _, after, details = audit_rows(db, "care_plans", plan_id[0])[-1]
    assert (db_role, actor, after["status"]) == (role_settings.postgres_user, None, "paused")
    assert details["actor_setting"] == "not-a-uuid"


AUDITED = {
    "patients",
    "care_plans",
    "vital_requirements",
    "patient_provider_assignments",
    "device_assignments",
    "devices",
    "patient_consents",
    "patient_subscriptions",
}


def test_every_sensitive_table_is_audited(db: Conn, org: Organization) -> None:
    patient = factories.create_patient(db, org.id)
    factories.create_care_plan(db, patient)
    factories.create_requirement(db, patient, "heart_rate", warning_high=110.0)
    factories.add_to_care_team(db, patient, factories.create_provider(db, org.id))
    factories.create_device(db, org.id, assign_to=patient, since=datetime.now(UTC) - timedelta(days=1))
    db.execute(
        "INSERT INTO patient_consents (organization_id, patient_id, consent_type, version)"
        " VALUES (%s, %s, 'telehealth', 'v1')",
        (org.id, patient.id),
    )
    plan = db.execute(
        "INSERT INTO service_plans (organization_id, code, name, price_minor) VALUES (%s, 'basic', 'Basic', 0)"
        " RETURNING id",
        (org.id,),
    ).fetchone()
    assert plan is not None
    db.execute(
        "INSERT INTO patient_subscriptions (organization_id, patient_id, service_plan_id, current_period_start,"
        " current_period_end) VALUES (%s, %s, %s, now(), now() + interval '30 days')",
        (org.id, patient.id, plan[0]),
    )
    rows = db.execute(
        "SELECT DISTINCT entity_type, action FROM audit_logs"
        " WHERE organization_id = %s AND details ->> 'source' = 'trigger' AND action LIKE '%%.insert'",
        (org.id,),
    ).fetchall()
    assert {table for table, _ in rows} == AUDITED
    assert all(action == f"{table}.insert" for table, action in rows)


def test_deleting_a_row_logs_its_last_state(db: Conn, org: Organization, patient: Patient) -> None:
    provider = factories.create_provider(db, org.id)
    assignment = factories.add_to_care_team(db, patient, provider, role="pharmacist")
    db.execute("DELETE FROM patient_provider_assignments WHERE id = %s", (assignment,))
    action, _, _, before, after, _ = audit_rows(db, "patient_provider_assignments", assignment)[-1]
    assert (action, before["role"], after) == ("patient_provider_assignments.delete", "pharmacist", None)


def test_the_app_cannot_rewrite_or_remove_audit_rows(
    db: Conn, org: Organization, patient: Patient, connect_as: RoleConnect
) -> None:
    with connect_as("app", org.id) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE audit_logs SET actor_user_id = %s WHERE entity_id = %s", (uuid.uuid4(), patient.id))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_logs WHERE entity_id = %s", (patient.id,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT audit_row_change()")
    assert len(audit_rows(db, "patients", patient.id)) == 1
