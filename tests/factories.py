"""Test data factories: plain functions over a psycopg connection (as the schema owner), with defaults.

Every call creates fresh, uniquely named rows, so tests never share or collide on data. Fixtures in conftest.py
wrap the common ones.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from ingest import provisioning

Conn = psycopg.Connection[Any]


def unique(prefix: str) -> str:
    """A short unique name such as `org-3f9a1c2b7d`."""
    return f"{prefix}-{secrets.token_hex(5)}"


@dataclass(frozen=True, slots=True)
class Organization:
    id: UUID
    slug: str


@dataclass(frozen=True, slots=True)
class Provider:
    id: UUID
    user_id: UUID
    organization_id: UUID


@dataclass(frozen=True, slots=True)
class Patient:
    id: UUID
    user_id: UUID
    organization_id: UUID
    timezone: str


@dataclass(frozen=True, slots=True)
class Device:
    id: UUID
    serial: str
    password: str
    organization_id: UUID


def _one(conn: Conn, query: str, params: Sequence[Any] | dict[str, Any]) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def create_organization(conn: Conn, *, name: str | None = None, timezone: str = "UTC") -> Organization:
    slug = unique("org")
    org_id = _one(
        conn,
        "INSERT INTO organizations (name, slug, timezone) VALUES (%s, %s, %s) RETURNING id",
        (name or slug, slug, timezone),
    )
    return Organization(org_id, slug)


def create_user(
    conn: Conn, organization_id: UUID, *, role: str = "provider", first_name: str = "Test", last_name: str = "User"
) -> UUID:
    email = f"{unique('user')}@example.test"
    # A syntactically real bcrypt-style hash; tests never log in with it.
    password_hash = "$2b$12$" + secrets.token_urlsafe(40)[:53]
    return UUID(
        str(
            _one(
                conn,
                "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (organization_id, email, password_hash, role, first_name, last_name),
            )
        )
    )


def create_provider(conn: Conn, organization_id: UUID, *, provider_type: str = "nurse") -> Provider:
    user_id = create_user(conn, organization_id, role="provider")
    provider_id = _one(
        conn,
        "INSERT INTO healthcare_providers (organization_id, user_id, provider_type, npi)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (organization_id, user_id, provider_type, f"{secrets.randbelow(10**10):010d}"),
    )
    return Provider(provider_id, user_id, organization_id)


def create_patient(
    conn: Conn, organization_id: UUID, *, timezone: str = "America/Chicago", date_of_birth: date = date(1950, 5, 17)
) -> Patient:
    user_id = create_user(conn, organization_id, role="patient")
    patient_id = _one(
        conn,
        "INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (organization_id, user_id, unique("mrn"), date_of_birth, timezone),
    )
    return Patient(patient_id, user_id, organization_id, timezone)


def add_to_care_team(
    conn: Conn,
    patient: Patient,
    provider: Provider,
    *,
    role: str = "nurse",
    is_primary: bool = False,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
) -> UUID:
    return UUID(
        str(
            _one(
                conn,
                "INSERT INTO patient_provider_assignments"
                " (organization_id, patient_id, provider_id, role, is_primary, started_at, ended_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    patient.organization_id,
                    patient.id,
                    provider.id,
                    role,
                    is_primary,
                    started_at or datetime.now(UTC) - timedelta(days=365),
                    ended_at,
                ),
            )
        )
    )


def create_care_plan(conn: Conn, patient: Patient, *, template_code: str | None = None, status: str = "active") -> UUID:
    template_id = None
    if template_code is not None:
        template_id = _one(conn, "SELECT id FROM care_plan_templates WHERE code = %s LIMIT 1", (template_code,))
    return UUID(
        str(
            _one(
                conn,
                "INSERT INTO care_plans (organization_id, patient_id, template_id, status, title, start_date)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    patient.organization_id,
                    patient.id,
                    template_id,
                    status,
                    template_code or "Remote monitoring",
                    date.today() - timedelta(days=30),
                ),
            )
        )
    )


def create_requirement(
    conn: Conn,
    patient: Patient,
    vital_type: str,
    *,
    care_plan_id: UUID | None = None,
    effective_from: datetime | None = None,
    **rule: Any,
) -> UUID:
    """Inserts the next version of the patient's requirement for `vital_type` (a vital_types.code)."""
    columns = ["organization_id", "patient_id", "vital_type_id", "care_plan_id", "version", "effective_from"]
    values: list[Any] = [
        patient.organization_id,
        patient.id,
        vital_type_id(conn, vital_type),
        care_plan_id,
        1,  # replaced by the versioning trigger
        effective_from or datetime.now(UTC) - timedelta(days=30),
    ]
    for column, value in rule.items():
        columns.append(column)
        values.append(Jsonb(value) if isinstance(value, dict) else value)
    placeholders = ", ".join(["%s"] * len(values))
    query = f"INSERT INTO vital_requirements ({', '.join(columns)}) VALUES ({placeholders}) RETURNING id"
    return UUID(str(_one(conn, query, values)))


def create_template_requirements(
    conn: Conn, patient: Patient, template_code: str, *, care_plan_id: UUID | None = None
) -> list[UUID]:
    """The requirements a care plan template starts from (care_plan_templates.default_requirements), as the
    patient's: one version per vital type, effective for the last 30 days."""
    defaults = _one(conn, "SELECT default_requirements FROM care_plan_templates WHERE code = %s", (template_code,))
    created = []
    for req in defaults:
        rule = {k: v for k, v in req.items() if k != "vital_type"}
        if "expected_times" in rule:
            rule["expected_times"] = [time.fromisoformat(t) for t in rule["expected_times"]]
        created.append(create_requirement(conn, patient, req["vital_type"], care_plan_id=care_plan_id, **rule))
    return created


def vital_type_id(conn: Conn, code: str) -> int:
    return int(_one(conn, "SELECT id FROM vital_types WHERE code = %s", (code,)))


def create_device(
    conn: Conn,
    organization_id: UUID,
    *,
    kind: str = "bp_cuff",
    assign_to: Patient | None = None,
    since: datetime | None = None,
    serial: str | None = None,
) -> Device:
    """Registers a device with fresh MQTT credentials (through provisioning), optionally assigned to a patient.

    The broker learns the credentials only after `ingest.broker_sync.sync_broker` (see the `mqtt_device` fixture).
    """
    provisioned = provisioning.add_device(
        conn, organization_id=organization_id, serial=serial or unique("dev"), kind=kind, model="TestModel"
    )
    if assign_to is not None:
        provisioning.assign_device(
            conn,
            serial=provisioned.serial,
            patient_id=assign_to.id,
            since=since or datetime.now(UTC) - timedelta(days=60),
        )
    return Device(provisioned.id, provisioned.serial, provisioned.password, organization_id)
