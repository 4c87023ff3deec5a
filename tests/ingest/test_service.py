"""End to end through the real broker and database: `python -m ingest serve` as a subprocess, devices publishing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ingest import provisioning
from ingest.settings import IngestSettings
from tests import factories
from tests.conftest import MqttDeviceFactory
from tests.factories import Patient
from tests.ingest.harness import ROOT, IngestProcess, eventually, message, publish, reading

Start = Callable[..., IngestProcess]


def count(db: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = db.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def refusals(db: psycopg.Connection[Any], serial: str) -> list[tuple[str, int | None, str | None]]:
    return db.execute(
        "SELECT reason::text, reading_index, message_id FROM ingest_rejections WHERE claimed_serial = %s"
        " ORDER BY message_id NULLS FIRST, reading_index NULLS FIRST, reason",
        (serial,),
    ).fetchall()


async def test_every_refusal_is_stored_and_acknowledged(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    device = mqtt_device(assign_to=patient)
    idle = mqtt_device()
    ingest = await ingest_process([device.serial, idle.serial]).ready()
    now = datetime.now(UTC)
    at = now - timedelta(minutes=1)
    good = reading(72, at=at)
    bad_messages = [
        b"\xff\xfe not utf-8",
        b'{"message_id": "nan", "readings": [{"type": "heart_rate", "value": NaN, "unit": "/min",'
        b' "measured_at": "2026-01-01T00:00:00Z"}]}',
        b'{"message_id": "dup", "message_id": "dup", "readings": []}',
        b"[1, 2, 3]",
        json.dumps({"message_id": "extra", "readings": [good], "colour": "red"}).encode(),
        message("bad id!", good),
        message("no-readings"),
        message("too-many", *[reading(60 + i % 30, at=at - timedelta(seconds=i)) for i in range(501)]),
        b'{"message_id": "big", "readings": [], "meta": {"x": "' + b"x" * 70_000 + b'"}}',
    ]
    partial = message(
        "partial",
        good,
        reading(72, type_="pulse", at=at),
        reading(72, unit="bpm", at=at + timedelta(seconds=1)),
        reading(72, at=now + timedelta(minutes=10)),
        reading(72, at=now - timedelta(days=31)),
        reading(500, at=at + timedelta(seconds=2)),
        reading(120, type_="systolic_bp", unit="mm[Hg]", at=at),
        reading(130, type_="diastolic_bp", unit="mm[Hg]", at=at),
        {"type": "spo2", "value": 97, "unit": "%", "measured_at": "2026-11-25T08:00:00"},
    )
    huge = message("huge", reading(1, at=at + timedelta(seconds=3))).replace(b'"value": 1,', b'"value": 1e999,')
    long_int = message("long", reading(1, at=at + timedelta(seconds=4))).replace(
        b'"value": 1,', b'"value": ' + b"9" * 400 + b","
    )
    await publish(ingest_settings, device.serial, device.password, [*bad_messages, partial, huge, long_int])
    await publish(ingest_settings, idle.serial, idle.password, [message("idle", good)])

    await eventually(lambda: count(db, "SELECT count(*) FROM vital_readings WHERE device_id = %s", device.id) == 1)
    expected_messages = {
        "not_utf8",
        "invalid_json",
        "not_object",
        "invalid_message",
        "bad_message_id",
        "bad_reading_count",
        "payload_too_large",
    }
    expected_readings = [
        ("unknown_type", 1, "partial"),
        ("unit_mismatch", 2, "partial"),
        ("future_timestamp", 3, "partial"),
        ("stale_timestamp", 4, "partial"),
        ("implausible_value", 5, "partial"),
        ("cross_field", 6, "partial"),
        ("cross_field", 7, "partial"),
        ("bad_timestamp", 8, "partial"),
        ("non_finite", 0, "huge"),
        ("out_of_range", 0, "long"),
    ]
    total = len(expected_messages) + 2 + len(expected_readings)
    await eventually(lambda: len(refusals(db, device.serial)) >= total, what="all refusals stored")
    stored = refusals(db, device.serial)
    assert {reason for reason, index, _ in stored if index is None} == expected_messages
    assert sorted(r for r in stored if r[1] is not None) == sorted(expected_readings)
    assert refusals(db, idle.serial) == [("unassigned_device", 0, "idle")]
    big = db.execute(
        "SELECT octet_length(payload), payload_size FROM ingest_rejections WHERE claimed_serial = %s"
        " AND reason = 'payload_too_large'",
        (device.serial,),
    ).fetchone()
    assert big == (ingest_settings.ingest_max_payload_bytes, len(bad_messages[-1]))
    assert await ingest.metric("ingest_acks_total") == len(bad_messages) + 4
    assert await ingest.metric("ingest_messages_refused_total", reason="bad_reading_count") == 2
    assert await ingest.metric("ingest_readings_refused_total", reason="cross_field") == 2
    assert await ingest.metric("ingest_readings_written_total") == 1


async def test_duplicates_conflicts_and_attribution_by_time(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    handover = datetime.now(UTC) - timedelta(hours=1)
    device = mqtt_device(assign_to=patient, since=handover - timedelta(days=1))
    later = factories.create_patient(db, patient.organization_id)
    provisioning.assign_device(db, serial=device.serial, patient_id=later.id, since=handover)
    ingest = await ingest_process([device.serial]).ready()
    first = message(
        "m-1", reading(70, at=handover - timedelta(minutes=5)), reading(71, at=handover + timedelta(minutes=5))
    )
    conflict = message("m-2", reading(75, at=handover - timedelta(minutes=5)))
    await publish(ingest_settings, device.serial, device.password, [first, first, first, conflict])
    await eventually(lambda: len(refusals(db, device.serial)) == 1, what="the conflict stored")
    rows = db.execute(
        "SELECT value, patient_id FROM vital_readings WHERE device_id = %s ORDER BY measured_at", (device.id,)
    ).fetchall()
    assert rows == [(70.0, patient.id), (71.0, later.id)]
    assert refusals(db, device.serial) == [("conflicting_duplicate", 0, "m-2")]
    assert await ingest.metric("ingest_readings_duplicate_total") == 4
    assert await ingest.metric("ingest_readings_conflicting_total") == 1


async def test_replay_stores_what_an_operator_fixed_once(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    device = mqtt_device()
    await ingest_process([device.serial]).ready()
    at = datetime.now(UTC) - timedelta(minutes=30)
    payload = message("early", reading(72, at=at), reading(73, at=at + timedelta(seconds=1)), reading(5, at=at))
    await publish(ingest_settings, device.serial, device.password, [payload])
    await eventually(lambda: len(refusals(db, device.serial)) == 3, what="three refusals")
    assert {r[0] for r in refusals(db, device.serial)} == {"unassigned_device", "implausible_value"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "ingest", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout

    since = (at - timedelta(hours=1)).isoformat()
    cli("devices", "assign", device.serial, "--patient", str(patient.id), "--since", since)
    out = cli("rejections", "replay", "--serial", device.serial, "--reason", "unassigned_device")
    assert "replayed 2 refusals" in out
    assert "stored: 2" in out
    values = db.execute("SELECT value FROM vital_readings WHERE device_id = %s ORDER BY measured_at", (device.id,))
    assert [v for (v,) in values] == [72.0, 73.0]
    results = db.execute(
        "SELECT reason::text, replay_result FROM ingest_rejections WHERE claimed_serial = %s ORDER BY reading_index",
        (device.serial,),
    ).fetchall()
    assert results == [("unassigned_device", "stored"), ("unassigned_device", "stored"), ("implausible_value", None)]
    # Again: nothing left to replay for that reason; the implausible reading is still refused.
    assert "nothing to replay" in cli(
        "rejections", "replay", "--serial", device.serial, "--reason", "unassigned_device"
    )
    assert "refused: 1" in cli("rejections", "replay", "--serial", device.serial)
    assert count(db, "SELECT count(*) FROM vital_readings WHERE device_id = %s", device.id) == 2
    listed = json.loads(cli("rejections", "list", "--serial", device.serial, "--json"))
    assert sorted(r["reason"] for r in listed) == ["implausible_value", "unassigned_device", "unassigned_device"]


async def test_status_messages_health_and_metrics(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    ingest_process: Start,
) -> None:
    device = mqtt_device()
    ingest = await ingest_process([device.serial]).ready()
    assert (await ingest.get("/healthz"))[0] == 200
    assert await ingest.get("/readyz") == (200, "ready\n")
    await publish(ingest_settings, device.serial, device.password, [b"online"], kind="status")

    def status() -> tuple[Any, ...]:
        row = db.execute("SELECT connection_status, last_seen_at FROM devices WHERE id = %s", (device.id,)).fetchone()
        assert row is not None
        return tuple(row)

    await eventually(lambda: status()[0] == "online")
    seen = status()[1]
    assert seen is not None
    await publish(ingest_settings, device.serial, device.password, [b"offline"], kind="status")
    await eventually(lambda: status()[0] == "offline")
    assert status()[1] >= seen
    _, text = await ingest.get("/metrics")
    for name in ("ingest_status_updates_total", "ingest_flush_duration_seconds_bucket", "ingest_mqtt_connected 1.0"):
        assert name in text
