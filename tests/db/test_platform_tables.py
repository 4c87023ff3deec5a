"""user_devices, service plans and subscriptions (with the device limit), patient consents."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from tests import factories
from tests.db.conftest import RoleConnect
from tests.factories import Organization, Patient

Conn = psycopg.Connection[Any]


def register_push_token(conn: Conn, organization_id: UUID, user_id: UUID, token: str) -> UUID:
    row = conn.execute(
        "INSERT INTO user_devices (organization_id, user_id, platform, push_token, last_used_at)"
        " VALUES (%s, %s, 'ios', %s, now())"
        " ON CONFLICT (platform, push_token) DO UPDATE"
        " SET user_id = EXCLUDED.user_id, organization_id = EXCLUDED.organization_id, is_active = true,"
        " deactivated_at = NULL, deactivation_reason = NULL, last_used_at = now()"
        " RETURNING id",
        (organization_id, user_id, token),
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def test_a_push_token_belongs_to_the_last_user_who_registered_it(
    db: Conn, org: Organization, connect_as: RoleConnect
) -> None:
    alice = factories.create_user(db, org.id, role="patient")
    bob = factories.create_user(db, org.id, role="patient")
    token = secrets.token_hex(32)
    with connect_as("app", org.id) as conn:
        first = register_push_token(conn, org.id, alice, token)
        second = register_push_token(conn, org.id, bob, token)
    assert first == second
    rows = db.execute("SELECT user_id, is_active FROM user_devices WHERE push_token = %s", (token,)).fetchall()
    assert rows == [(bob, True)]


def test_the_processors_retire_a_dead_token_but_cannot_change_its_owner(
    db: Conn, org: Organization, connect_as: RoleConnect
) -> None:
    user = factories.create_user(db, org.id)
    device_id = register_push_token(db, org.id, user, secrets.token_hex(32))
    with connect_as("processor") as conn:
        conn.execute(
            "UPDATE user_devices SET is_active = false, deactivated_at = now(), deactivation_reason = 'apns_410'"
            " WHERE id = %s",
            (device_id,),
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE user_devices SET user_id = %s WHERE id = %s", (user, device_id))
    assert db.execute("SELECT is_active FROM user_devices WHERE id = %s", (device_id,)).fetchone() == (False,)


def test_a_token_cannot_point_at_a_user_of_another_organization(db: Conn, org: Organization) -> None:
    stranger = factories.create_user(db, factories.create_organization(db).id)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        register_push_token(db, org.id, stranger, secrets.token_hex(32))


def create_plan(conn: Conn, organization_id: UUID, *, max_devices: int | None) -> UUID:
    row = conn.execute(
        "INSERT INTO service_plans (organization_id, code, name, price_minor, max_devices_per_patient)"
        " VALUES (%s, %s, 'RPM basic', 4900, %s) RETURNING id",
        (organization_id, factories.unique("plan").replace("-", "_"), max_devices),
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def subscribe(conn: Conn, patient: Patient, plan_id: UUID, status: str = "active") -> UUID:
    now = datetime.now(UTC)
    row = conn.execute(
        "INSERT INTO patient_subscriptions (organization_id, patient_id, service_plan_id, status,"
        " current_period_start, current_period_end, trial_ends_at, ended_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            patient.organization_id,
            patient.id,
            plan_id,
            status,
            now,
            now + timedelta(days=30),
            now + timedelta(days=14) if status == "trialing" else None,
            now if status in ("cancelled", "expired") else None,
        ),
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def test_a_patient_has_at_most_one_live_subscription(db: Conn, org: Organization, patient: Patient) -> None:
    plan = create_plan(db, org.id, max_devices=None)
    subscribe(db, patient, plan, "cancelled")
    subscribe(db, patient, plan, "trialing")
    with pytest.raises(psycopg.errors.UniqueViolation, match="patient_subscriptions_one_live"):
        subscribe(db, patient, plan, "active")


def test_the_plan_limits_the_devices_assigned_to_a_patient(db: Conn, org: Organization, patient: Patient) -> None:
    subscribe(db, patient, create_plan(db, org.id, max_devices=2))
    factories.create_device(db, org.id, assign_to=patient)
    second = factories.create_device(db, org.id, kind="scale", assign_to=patient)
    with pytest.raises(psycopg.errors.CheckViolation, match="limit of their service plan"):
        factories.create_device(db, org.id, kind="pulse_oximeter", assign_to=patient)

    # Ending an assignment frees a place; a patient without a live subscription has no limit.
    db.execute("UPDATE device_assignments SET assigned_to = now() WHERE device_id = %s", (second.id,))
    factories.create_device(db, org.id, kind="pulse_oximeter", assign_to=patient)
    unlimited = factories.create_patient(db, org.id)
    for _ in range(3):
        factories.create_device(db, org.id, assign_to=unlimited)
    open_count = db.execute(
        "SELECT count(*) FROM device_assignments WHERE patient_id = %s AND assigned_to IS NULL", (unlimited.id,)
    ).fetchone()
    assert open_count == (3,)


def grant_consent(conn: Conn, patient: Patient, kind: str = "remote_monitoring", version: str = "2026-01") -> UUID:
    row = conn.execute(
        "INSERT INTO patient_consents (organization_id, patient_id, consent_type, version, granted_by)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (patient.organization_id, patient.id, kind, version, patient.user_id),
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def has_consent(conn: Conn, patient: Patient, kind: str = "remote_monitoring") -> bool:
    row = conn.execute("SELECT has_consent(%s, %s)", (patient.id, kind)).fetchone()
    assert row is not None
    return bool(row[0])


def test_a_consent_is_revoked_once_and_never_rewritten(db: Conn, org: Organization, connect_as: RoleConnect) -> None:
    patient = factories.create_patient(db, org.id)
    with connect_as("app", org.id) as conn:
        consent = grant_consent(conn, patient)
        assert has_consent(conn, patient)
        with pytest.raises(psycopg.errors.UniqueViolation, match="patient_consents_one_current"):
            grant_consent(conn, patient, version="2026-02")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE patient_consents SET version = 'x' WHERE id = %s", (consent,))

        conn.execute(
            "UPDATE patient_consents SET revoked_at = now(), revoked_by = %s, revocation_reason = 'new version'"
            " WHERE id = %s",
            (patient.user_id, consent),
        )
        assert not has_consent(conn, patient)
        grant_consent(conn, patient, version="2026-02")
        assert has_consent(conn, patient)
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
            conn.execute("UPDATE patient_consents SET revocation_reason = 'edited' WHERE id = %s", (consent,))
    # Not even the owner rewrites or deletes one.
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
        db.execute("UPDATE patient_consents SET version = '2025-01' WHERE id = %s", (consent,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="revoke a consent"):
        db.execute("DELETE FROM patient_consents WHERE id = %s", (consent,))
    versions = db.execute(
        "SELECT version, revoked_at IS NOT NULL FROM patient_consents WHERE patient_id = %s ORDER BY granted_at",
        (patient.id,),
    ).fetchall()
    assert versions == [("2026-01", True), ("2026-02", False)]


def test_an_expired_consent_no_longer_counts(db: Conn, org: Organization) -> None:
    patient = factories.create_patient(db, org.id)
    db.execute(
        "INSERT INTO patient_consents (organization_id, patient_id, consent_type, version, granted_at, expires_at)"
        " VALUES (%s, %s, 'sms_notifications', 'v1', now() - interval '2 days', now() - interval '1 day')",
        (org.id, patient.id),
    )
    assert not has_consent(db, patient, "sms_notifications")
    row = db.execute(
        "SELECT has_consent(%s, 'sms_notifications', now() - interval '36 hours')", (patient.id,)
    ).fetchone()
    assert row == (True,)
