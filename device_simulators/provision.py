"""Provisions a load-test fleet (organization, patients, devices assigned to them) through ingest's
provisioning API, and retires it afterwards. Runs as the schema owner, like `python -m ingest devices`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from device_simulators.credentials import DeviceCredential, Fleet
from device_simulators.device import DeviceKind
from device_simulators.publisher import Broker
from ingest import provisioning

Conn = psycopg.Connection[Any]


def provision_fleet(
    conn: Conn,
    prefix: str,
    count: int,
    broker: Broker,
    *,
    kind: DeviceKind = DeviceKind.MULTI,
    timezone: str = "UTC",
    assigned_since: datetime | None = None,
) -> tuple[UUID, Fleet]:
    """Creates an organization `prefix`, `count` patients and one device each (serials `<prefix>-00001`…).

    Returns the organization id and the fleet's credentials. The broker learns them after
    `ingest.broker_sync.sync_broker`.
    """
    since = assigned_since or datetime.now(UTC) - timedelta(days=35)
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO organizations (name, slug, timezone) VALUES (%s, %s, %s) RETURNING id",
            (f"Load test {prefix}", prefix, timezone),
        ).fetchone()
        assert row is not None
        org_id = UUID(str(row[0]))
        password_hash = "$2b$12$" + secrets.token_urlsafe(40)[:53]
        users = conn.execute(
            "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
            " SELECT %s, %s || '-' || i || '@load.test', %s, 'patient', 'Load', 'Patient ' || i"
            " FROM generate_series(1, %s) AS i RETURNING id",
            (org_id, prefix, password_hash, count),
        ).fetchall()
        patients: list[UUID] = []
        for i, (user_id,) in enumerate(users):
            prow = conn.execute(
                "INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (org_id, user_id, f"{prefix}-{i + 1}", date(1950, 1, 1) + timedelta(days=i % 9000), timezone),
            ).fetchone()
            assert prow is not None
            patients.append(UUID(str(prow[0])))
    devices: list[DeviceCredential] = []
    for i, patient_id in enumerate(patients):
        serial = f"{prefix}-{i + 1:05d}"
        provisioned = provisioning.add_device(
            conn, organization_id=org_id, serial=serial, kind=kind.value, model="LoadSim"
        )
        provisioning.assign_device(conn, serial=serial, patient_id=patient_id, since=since)
        devices.append(
            DeviceCredential(
                serial=serial,
                password=provisioned.password,
                kind=kind,
                patient_id=patient_id,
                organization_id=org_id,
                timezone=timezone,
            )
        )
    return org_id, Fleet(broker=broker, devices=tuple(devices))


def retire_fleet(conn: Conn, serials: Sequence[str]) -> None:
    """Revokes the devices (their MQTT access ends at the next broker sync)."""
    for serial in serials:
        provisioning.revoke_device(conn, serial=serial)
