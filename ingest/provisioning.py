"""Device provisioning: register, assign, unassign, revoke and rotate credentials (admin operations).

Runs as the schema owner through psycopg. Each change is audited; callers apply broker-side effects with
`ingest.broker_sync.sync_broker` (the CLI does it after every change), so credentials take effect within seconds
without a broker restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ingest.broker_auth import check_serial, hash_password, new_secret


class ProvisioningError(Exception):
    retriable: ClassVar[bool] = False


class UnknownDeviceError(ProvisioningError):
    def __init__(self, serial: str) -> None:
        self.serial = serial
        super().__init__(f"no device with serial {serial!r}")


class DeviceRevokedError(ProvisioningError):
    def __init__(self, serial: str) -> None:
        self.serial = serial
        super().__init__(f"device {serial!r} is revoked")


class AssignmentError(ProvisioningError):
    pass


@dataclass(frozen=True, slots=True)
class ProvisionedDevice:
    """A device and its MQTT password, which is shown once and never stored."""

    id: UUID
    serial: str
    password: str


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: UUID
    organization_id: UUID
    serial: str
    kind: str
    status: str
    model: str | None
    patient_id: UUID | None
    last_seen_at: datetime | None


Conn = psycopg.Connection[Any]


def _audit(conn: Conn, action: str, device_id: UUID, organization_id: UUID, details: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO audit_logs (organization_id, action, entity_type, entity_id, details)"
        " VALUES (%s, %s, 'device', %s, %s)",
        (organization_id, action, device_id, Jsonb(details)),
    )


def _device(conn: Conn, serial: str, *, lock: bool = False) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, organization_id, status FROM devices WHERE serial = %s" + (" FOR UPDATE" if lock else ""),
        (serial,),
    ).fetchone()
    if row is None:
        raise UnknownDeviceError(serial)
    return {"id": row[0], "organization_id": row[1], "status": row[2]}


def add_device(
    conn: Conn,
    *,
    organization_id: UUID,
    serial: str,
    kind: str,
    model: str | None = None,
    manufacturer: str | None = None,
    firmware_version: str | None = None,
) -> ProvisionedDevice:
    """Registers a device with a fresh MQTT password."""
    check_serial(serial)
    password = new_secret()
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO devices (organization_id, serial, kind, model, manufacturer, firmware_version,"
            " credential_hash, credentials_rotated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now()) RETURNING id",
            (organization_id, serial, kind, model, manufacturer, firmware_version, hash_password(password)),
        ).fetchone()
        assert row is not None
        _audit(conn, "device.add", row[0], organization_id, {"serial": serial, "kind": kind})
    return ProvisionedDevice(id=row[0], serial=serial, password=password)


def assign_device(conn: Conn, *, serial: str, patient_id: UUID, since: datetime) -> UUID:
    """Assigns the device to a patient from `since`, ending any open assignment at that instant."""
    with conn.transaction():
        device = _device(conn, serial, lock=True)
        if device["status"] == "revoked":
            raise DeviceRevokedError(serial)
        conn.execute(
            "UPDATE device_assignments SET assigned_to = %s"
            " WHERE device_id = %s AND assigned_to IS NULL AND assigned_from < %s",
            (since, device["id"], since),
        )
        try:
            row = conn.execute(
                "INSERT INTO device_assignments (organization_id, device_id, patient_id, assigned_from)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (device["organization_id"], device["id"], patient_id, since),
            ).fetchone()
        except psycopg.errors.ExclusionViolation as exc:
            raise AssignmentError(f"device {serial!r} is already assigned at or after {since.isoformat()}") from exc
        except psycopg.errors.ForeignKeyViolation as exc:
            raise AssignmentError(f"patient {patient_id} is not in the device's organization") from exc
        assert row is not None
        _audit(
            conn,
            "device.assign",
            device["id"],
            device["organization_id"],
            {"patient_id": str(patient_id), "since": since.isoformat()},
        )
    return UUID(str(row[0]))


def unassign_device(conn: Conn, *, serial: str, at: datetime) -> bool:
    """Ends the device's open assignment at `at`; False when it had none."""
    with conn.transaction():
        device = _device(conn, serial, lock=True)
        cur = conn.execute(
            "UPDATE device_assignments SET assigned_to = %s WHERE device_id = %s AND assigned_to IS NULL",
            (at, device["id"]),
        )
        if cur.rowcount:
            _audit(conn, "device.unassign", device["id"], device["organization_id"], {"at": at.isoformat()})
    return bool(cur.rowcount)


def revoke_device(conn: Conn, *, serial: str) -> None:
    """Revokes the device: it can no longer connect, and ingest refuses its messages."""
    with conn.transaction():
        device = _device(conn, serial, lock=True)
        if device["status"] == "revoked":
            return
        conn.execute(
            "UPDATE devices SET status = 'revoked', revoked_at = now(), credential_hash = NULL WHERE id = %s",
            (device["id"],),
        )
        _audit(conn, "device.revoke", device["id"], device["organization_id"], {})


def rotate_credentials(conn: Conn, *, serial: str) -> str:
    """Issues a new MQTT password; the old one stops working at the next broker sync."""
    password = new_secret()
    with conn.transaction():
        device = _device(conn, serial, lock=True)
        if device["status"] == "revoked":
            raise DeviceRevokedError(serial)
        conn.execute(
            "UPDATE devices SET credential_hash = %s, credentials_rotated_at = now() WHERE id = %s",
            (hash_password(password), device["id"]),
        )
        _audit(conn, "device.rotate_credentials", device["id"], device["organization_id"], {})
    return password


def list_devices(conn: Conn, *, organization_id: UUID | None = None) -> list[DeviceInfo]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT d.id, d.organization_id, d.serial, d.kind::text AS kind, d.status::text AS status, d.model,"
            "       a.patient_id, d.last_seen_at"
            "  FROM devices d"
            "  LEFT JOIN device_assignments a ON a.device_id = d.id AND a.assigned_to IS NULL"
            " WHERE %(org)s::uuid IS NULL OR d.organization_id = %(org)s::uuid"
            " ORDER BY d.serial",
            {"org": organization_id},
        )
        return [DeviceInfo(**row) for row in cur.fetchall()]
