"""The writer against the real database: stored rows, refusals, duplicates, conflicts, the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg

from ingest import provisioning
from ingest.admission import Envelope, Limits
from ingest.identity import RecentIdentities
from ingest.rejection import RejectionReason
from ingest.units import UnitRegistry
from ingest.writer import Writer, touch_devices
from tests import factories
from tests.factories import Organization, Patient


def envelope(serial: str, *readings: dict[str, Any], message_id: str = "m-1", raw: bytes | None = None) -> Envelope:
    payload = raw if raw is not None else json.dumps({"message_id": message_id, "readings": list(readings)}).encode()
    return Envelope(f"devices/{serial}/readings", payload, datetime.now(UTC))


def hr(value: float, at: datetime, type_: str = "heart_rate", unit: str = "/min") -> dict[str, Any]:
    return {"type": type_, "value": value, "unit": unit, "measured_at": at.isoformat()}


def writer(units: UnitRegistry, cache: int = 0, destination: str | None = None) -> Writer:
    return Writer(units, Limits(), RecentIdentities(cache), destination)


def rows(db: psycopg.Connection[Any], device_id: object) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT vital_type_id, value, original_value, original_unit, patient_id, message_id, metadata"
        " FROM vital_readings WHERE device_id = %s ORDER BY measured_at, vital_type_id",
        (device_id,),
    ).fetchall()


def rejections(db: psycopg.Connection[Any], serial: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT reason::text, reading_index, payload, payload_size, message_id FROM ingest_rejections"
        " WHERE claimed_serial = %s ORDER BY reading_index NULLS FIRST, reason",
        (serial,),
    ).fetchall()


async def test_rejection_reasons_mirror_the_database_enum(ingest_conn: asyncpg.Connection) -> None:
    labels = await ingest_conn.fetchval("SELECT enum_range(NULL::rejection_reason)::text[]")
    assert list(labels) == [r.value for r in RejectionReason]


async def test_a_message_is_stored_attributed_with_its_outbox_row(
    db: psycopg.Connection[Any],
    org: Organization,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    at = datetime.now(UTC) - timedelta(minutes=1)
    meta_payload = json.dumps(
        {
            "message_id": "m-1",
            "readings": [hr(72, at), hr(98.6, at, "body_temperature", "[degF]")],
            "meta": {"seq": 7},
        }
    ).encode()
    written = await writer(units, destination="discard").write(ingest_conn, [envelope(device.serial, raw=meta_payload)])
    assert [(o.stored, o.duplicates, o.refused) for o in written.outcomes] == [(2, 0, ())]
    assert rows(db, device.id) == [
        (1, 72.0, 72.0, "/min", patient.id, "m-1", {"meta": {"seq": 7}}),
        (6, 37.0, 98.6, "[degF]", patient.id, "m-1", {"meta": {"seq": 7}}),
    ]
    assert [(e.vital_type, e.value, e.unit, e.patient_id) for e in written.events] == [
        ("heart_rate", 72.0, "/min", patient.id),
        ("body_temperature", 37.0, "Cel", patient.id),
    ]
    outbox = db.execute(
        "SELECT destination, device_ids, vital_type_ids, measured_ats FROM ingest_outbox WHERE id = %s",
        (written.outbox_id,),
    ).fetchone()
    assert outbox == ("discard", [device.id, device.id], [1, 6], [at, at])
    db.execute("DELETE FROM ingest_outbox WHERE id = %s", (written.outbox_id,))


async def test_redelivery_adds_nothing(
    db: psycopg.Connection[Any],
    org: Organization,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    message = envelope(device.serial, hr(72, datetime.now(UTC) - timedelta(minutes=1)))
    first = await writer(units).write(ingest_conn, [message])
    again = await writer(units).write(ingest_conn, [message, message])
    assert first.stored == 1
    assert again.stored == 0
    assert again.outbox_id is None
    assert [(o.stored, o.duplicates, o.refused) for o in again.outcomes] == [(0, 1, ()), (0, 1, ())]
    assert len(rows(db, device.id)) == 1
    assert rejections(db, device.serial) == []


async def test_a_conflicting_duplicate_keeps_the_first_value(
    db: psycopg.Connection[Any],
    org: Organization,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    at = datetime.now(UTC) - timedelta(minutes=1)
    await writer(units).write(ingest_conn, [envelope(device.serial, hr(72, at))])
    # A fresh writer has an empty cache: the database finds the conflict.
    second = envelope(device.serial, hr(80, at), hr(81, at + timedelta(seconds=1)), message_id="m-2")
    written = await writer(units).write(ingest_conn, [second])
    assert [(o.stored, o.duplicates) for o in written.outcomes] == [(1, 0)]
    assert [(r.reason, r.reading_index) for r in written.outcomes[0].refused] == [
        (RejectionReason.CONFLICTING_DUPLICATE, 0)
    ]
    assert [r[1] for r in rows(db, device.id)] == [72.0, 81.0]
    assert rejections(db, device.serial) == [("conflicting_duplicate", 0, second.payload, len(second.payload), "m-2")]


async def test_the_cache_finds_conflicts_before_the_database(
    db: psycopg.Connection[Any],
    org: Organization,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    at = datetime.now(UTC) - timedelta(minutes=1)
    cached = writer(units, cache=100)
    await cached.write(ingest_conn, [envelope(device.serial, hr(72, at))])
    written = await cached.write(
        ingest_conn, [envelope(device.serial, hr(72, at)), envelope(device.serial, hr(90, at))]
    )
    assert [(o.stored, o.duplicates, len(o.refused)) for o in written.outcomes] == [(0, 1, 0), (0, 0, 1)]
    assert [r[0] for r in rejections(db, device.serial)] == ["conflicting_duplicate"]


async def test_a_partial_message_stores_its_good_readings(
    db: psycopg.Connection[Any],
    org: Organization,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    at = datetime.now(UTC) - timedelta(minutes=1)
    message = envelope(
        device.serial,
        hr(72, at),
        hr(72, at, "pulse"),
        hr(500, at + timedelta(seconds=1)),
        hr(80, at, "systolic_bp", "mm[Hg]"),
        hr(90, at, "diastolic_bp", "mm[Hg]"),
        hr(97, at + timedelta(minutes=10), "spo2", "%"),
    )
    written = await writer(units).write(ingest_conn, [message])
    assert written.outcomes[0].stored == 1
    assert rejections(db, device.serial) == [
        ("unknown_type", 1, message.payload, len(message.payload), "m-1"),
        ("implausible_value", 2, message.payload, len(message.payload), "m-1"),
        ("cross_field", 3, message.payload, len(message.payload), "m-1"),
        ("cross_field", 4, message.payload, len(message.payload), "m-1"),
        ("future_timestamp", 5, message.payload, len(message.payload), "m-1"),
    ]
    assert [r[0] for r in rows(db, device.id)] == [1]


async def test_refusals_are_stored_once_per_payload_and_reason(
    db: psycopg.Connection[Any], org: Organization, ingest_conn: asyncpg.Connection, units: UnitRegistry
) -> None:
    serial = factories.unique("ghost")
    message = envelope(serial, hr(72, datetime.now(UTC)))
    bad = Envelope(f"devices/{serial}/readings", b'{"message_id": NaN}', datetime.now(UTC))
    for _ in range(2):
        written = await writer(units).write(ingest_conn, [message, bad])
        assert [o.refused[0].reason for o in written.outcomes] == [
            RejectionReason.UNKNOWN_DEVICE,
            RejectionReason.INVALID_JSON,
        ]
    assert sorted(r[0] for r in rejections(db, serial)) == ["invalid_json", "unknown_device"]


async def test_revoked_and_unassigned_devices(
    db: psycopg.Connection[Any],
    org: Organization,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
) -> None:
    revoked = factories.create_device(db, org.id, assign_to=patient)
    provisioning.revoke_device(db, serial=revoked.serial)
    idle = factories.create_device(db, org.id)
    at = datetime.now(UTC) - timedelta(minutes=1)
    written = await writer(units).write(
        ingest_conn, [envelope(revoked.serial, hr(72, at)), envelope(idle.serial, hr(72, at))]
    )
    assert [[(r.reason, r.reading_index) for r in o.refused] for o in written.outcomes] == [
        [(RejectionReason.REVOKED_DEVICE, None)],
        [(RejectionReason.UNASSIGNED_DEVICE, 0)],
    ]
    stored = db.execute(
        "SELECT device_id, organization_id FROM ingest_rejections WHERE claimed_serial = %s", (revoked.serial,)
    ).fetchone()
    assert stored == (revoked.id, org.id)


async def test_attribution_uses_the_assignment_history(
    db: psycopg.Connection[Any], org: Organization, ingest_conn: asyncpg.Connection, units: UnitRegistry
) -> None:
    first, second = factories.create_patient(db, org.id), factories.create_patient(db, org.id)
    handover = datetime.now(UTC) - timedelta(hours=1)
    device = factories.create_device(db, org.id, assign_to=first, since=handover - timedelta(days=1))
    provisioning.assign_device(db, serial=device.serial, patient_id=second.id, since=handover)
    await writer(units).write(
        ingest_conn,
        [
            envelope(
                device.serial,
                hr(70, handover - timedelta(minutes=1)),
                hr(71, handover),
                hr(72, handover - timedelta(days=2)),
            )
        ],
    )
    assert [(r[1], r[4]) for r in rows(db, device.id)] == [(70.0, first.id), (71.0, second.id)]
    assert [(r[0], r[1]) for r in rejections(db, device.serial)] == [("unassigned_device", 2)]


async def test_last_seen_only_moves_forward(
    db: psycopg.Connection[Any], org: Organization, ingest_conn: asyncpg.Connection
) -> None:
    device = factories.create_device(db, org.id)
    now = datetime.now(UTC)
    await touch_devices(ingest_conn, {device.id: now})
    await touch_devices(ingest_conn, {device.id: now - timedelta(minutes=5)})
    assert db.execute("SELECT last_seen_at FROM devices WHERE id = %s", (device.id,)).fetchone() == (now,)
