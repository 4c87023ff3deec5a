"""The core schema holds its own constraints: identity, partitions, append-only audit, versions, privileges."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests import factories
from tests.factories import Organization, Patient
from tests.roles import Role, RoleSettings
from tests.security.tenant import tenant_transaction

Conn = psycopg.Connection[Any]


def insert_reading(
    conn: Conn, device: factories.Device, patient: Patient, measured_at: datetime, value: float = 120.0
) -> None:
    conn.execute(
        "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value,"
        " original_value, original_unit, measured_at, received_at, message_id, metadata)"
        " VALUES (uuid_generate_v7(), %s, %s, %s, 2, %s, %s, 'mm[Hg]', %s, now(), 'm-1', %s)",
        (patient.organization_id, patient.id, device.id, value, value, measured_at, Jsonb({})),
    )


def partition_of(conn: Conn, device: factories.Device, measured_at: datetime) -> str:
    row = conn.execute(
        "SELECT tableoid::regclass::text FROM vital_readings WHERE device_id = %s AND measured_at = %s",
        (device.id, measured_at),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_reading_identity_refuses_a_duplicate(db: Conn, org: Organization, patient: Patient) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    at = datetime.now(UTC).replace(microsecond=0)
    insert_reading(db, device, patient, at)
    with pytest.raises(psycopg.errors.UniqueViolation, match="vital_readings"):
        insert_reading(db, device, patient, at, value=121.0)
    # Same instant, another vital type: a different identity.
    db.execute(
        "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value,"
        " original_value, original_unit, measured_at, received_at, message_id)"
        " VALUES (uuid_generate_v7(), %s, %s, %s, 3, 80, 80, 'mm[Hg]', %s, now(), 'm-1')",
        (patient.organization_id, patient.id, device.id, at),
    )
    count = db.execute("SELECT count(*) FROM vital_readings WHERE device_id = %s", (device.id,)).fetchone()
    assert count == (2,)


def test_readings_at_partition_boundaries_land_in_their_utc_day(db: Conn, org: Organization, patient: Patient) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last_instant = midnight - timedelta(microseconds=1)
    insert_reading(db, device, patient, midnight)
    insert_reading(db, device, patient, last_instant)
    assert partition_of(db, device, midnight) == f"vital_readings_{midnight:%Y%m%d}"
    assert partition_of(db, device, last_instant) == f"vital_readings_{last_instant:%Y%m%d}"

    # The oldest accepted age (30 days) and the near future are always covered.
    oldest = datetime.now(UTC) - timedelta(days=30, hours=23)
    ahead = datetime.now(UTC) + timedelta(days=7)
    insert_reading(db, device, patient, oldest)
    insert_reading(db, device, patient, ahead)
    assert partition_of(db, device, oldest) == f"vital_readings_{oldest:%Y%m%d}"


def test_partition_maintenance_is_idempotent(db: Conn) -> None:
    assert db.execute("SELECT ensure_vital_reading_partitions()").fetchone() == (0,)
    ahead = db.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'vital_readings'::regclass"
        " AND inhrelid::regclass::text >= 'vital_readings_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')"
    ).fetchone()
    assert ahead is not None and ahead[0] >= 15


def test_audit_log_refuses_update_delete_and_truncate(db: Conn, org: Organization) -> None:
    entity = uuid.uuid4()
    db.execute("INSERT INTO audit_logs (action, entity_type, entity_id) VALUES ('test.append', 'test', %s)", (entity,))
    for statement in (
        "UPDATE audit_logs SET action = 'test.tampered' WHERE entity_id = %s",
        "DELETE FROM audit_logs WHERE entity_id = %s",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            db.execute(statement, (entity,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        db.execute("TRUNCATE audit_logs")
    assert db.execute("SELECT action FROM audit_logs WHERE entity_id = %s", (entity,)).fetchall() == [("test.append",)]

    # The user-facing role may append and read (its own tenant's rows), never change; ingest may not read.
    with psycopg.connect(RoleSettings().dsn("app")) as app, tenant_transaction(app, org.id, commit=True):
        app.execute(
            "INSERT INTO audit_logs (organization_id, action, entity_type, entity_id)"
            " VALUES (%s, 'test.app', 'test', %s)",
            (org.id, entity),
        )
    with psycopg.connect(RoleSettings().dsn("app")) as app:
        with tenant_transaction(app, org.id):
            assert len(app.execute("SELECT 1 FROM audit_logs WHERE entity_id = %s", (entity,)).fetchall()) == 1
        for statement in (
            "DELETE FROM audit_logs WHERE entity_id = %s",
            "UPDATE audit_logs SET details = '{}' WHERE entity_id = %s",
        ):
            with tenant_transaction(app, org.id), pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement, (entity,))
    with (
        psycopg.connect(RoleSettings().dsn("ingest"), autocommit=True) as ingest,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        ingest.execute("SELECT count(*) FROM audit_logs")


@pytest.mark.parametrize(
    ("role", "query"),
    [
        ("ingest", "SELECT password_hash FROM users LIMIT 1"),
        ("ingest", "SELECT credential_hash FROM devices LIMIT 1"),
        ("ingest", "SELECT * FROM vital_requirements LIMIT 1"),
        ("ingest", "DELETE FROM vital_readings WHERE false"),
        ("ingest", "CREATE TABLE intruder (id int)"),
        ("processor", "SELECT password_hash FROM users LIMIT 1"),
        ("processor", "INSERT INTO vital_readings (id) VALUES (gen_random_uuid())"),
        ("processor", "SELECT payload FROM ingest_rejections LIMIT 1"),
        ("app", "SELECT credential_hash FROM devices LIMIT 1"),
        ("app", "INSERT INTO vital_readings (id) VALUES (gen_random_uuid())"),
        ("app", "UPDATE vital_requirements SET warning_high = 1 WHERE false"),
    ],
)
def test_service_roles_are_least_privileged(role: Role, query: str) -> None:
    with (
        psycopg.connect(RoleSettings().dsn(role), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(query)


def test_requirement_versions_are_immutable_and_supersede_each_other(db: Conn, patient: Patient) -> None:
    first = factories.create_requirement(db, patient, "systolic_bp", warning_high=140, critical_high=180)
    second = factories.create_requirement(db, patient, "systolic_bp", warning_high=135, critical_high=180)
    rows = db.execute(
        "SELECT id, version, effective_to IS NULL FROM vital_requirements WHERE patient_id = %s ORDER BY version",
        (patient.id,),
    ).fetchall()
    assert rows == [(first, 1, False), (second, 2, True)]
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
        db.execute("UPDATE vital_requirements SET warning_high = 150 WHERE id = %s", (second,))
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
        db.execute("DELETE FROM vital_requirements WHERE id = %s", (first,))
    with pytest.raises(psycopg.errors.CheckViolation):
        factories.create_requirement(db, patient, "systolic_bp", warning_high=140, critical_high=130)


def test_a_device_cannot_be_assigned_to_two_patients_at_once(db: Conn, org: Organization) -> None:
    a = factories.create_patient(db, org.id)
    b = factories.create_patient(db, org.id)
    device = factories.create_device(db, org.id)
    start = datetime.now(UTC) - timedelta(days=10)
    db.execute(
        "INSERT INTO device_assignments (organization_id, device_id, patient_id, assigned_from, assigned_to)"
        " VALUES (%s, %s, %s, %s, %s)",
        (org.id, device.id, a.id, start, start + timedelta(days=5)),
    )
    with pytest.raises(psycopg.errors.ExclusionViolation):
        db.execute(
            "INSERT INTO device_assignments (organization_id, device_id, patient_id, assigned_from)"
            " VALUES (%s, %s, %s, %s)",
            (org.id, device.id, b.id, start + timedelta(days=4)),
        )
    # Back to back is fine: history is kept.
    db.execute(
        "INSERT INTO device_assignments (organization_id, device_id, patient_id, assigned_from)"
        " VALUES (%s, %s, %s, %s)",
        (org.id, device.id, b.id, start + timedelta(days=5)),
    )


def test_a_device_cannot_be_assigned_across_organizations(db: Conn, org: Organization) -> None:
    other = factories.create_organization(db)
    stranger = factories.create_patient(db, other.id)
    device = factories.create_device(db, org.id)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute(
            "INSERT INTO device_assignments (organization_id, device_id, patient_id, assigned_from)"
            " VALUES (%s, %s, %s, now())",
            (org.id, device.id, stranger.id),
        )


def test_uuid_v7_is_time_ordered_and_versioned(db: Conn) -> None:
    ids = [row[0] for row in db.execute("SELECT uuid_generate_v7() FROM generate_series(1, 50)").fetchall()]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    millis = [u.int >> 80 for u in ids]
    assert millis == sorted(millis)
    assert abs(millis[0] - datetime.now(UTC).timestamp() * 1000) < 60_000


def test_patient_timezone_must_be_a_real_zone(db: Conn, org: Organization) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        factories.create_patient(db, org.id, timezone="Mars/Olympus_Mons")
    assert factories.create_patient(db, org.id, timezone="Australia/Lord_Howe").timezone == "Australia/Lord_Howe"


def test_vital_types_carry_the_right_loinc_and_ucum(db: Conn) -> None:
    rows = db.execute("SELECT code, loinc, canonical_unit FROM vital_types ORDER BY id").fetchall()
    assert rows == [
        ("heart_rate", "8867-4", "/min"),
        ("systolic_bp", "8480-6", "mm[Hg]"),
        ("diastolic_bp", "8462-4", "mm[Hg]"),
        ("spo2", "59408-5", "%"),
        ("respiratory_rate", "9279-1", "/min"),
        ("body_temperature", "8310-5", "Cel"),
        ("body_weight", "29463-7", "kg"),
        ("blood_glucose", "2339-0", "mg/dL"),
    ]
    degf = db.execute("SELECT (98.6 + pre_offset) * factor FROM vital_type_units WHERE unit = '[degF]'").fetchone()
    assert degf is not None and degf[0] == pytest.approx(37.0)
    lb = db.execute("SELECT 200 * factor FROM vital_type_units WHERE unit = '[lb_av]'").fetchone()
    assert lb is not None and lb[0] == pytest.approx(90.718474)
