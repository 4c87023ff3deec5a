"""`python -m ingest devices ...` end to end: credentials reach the broker within seconds, assignment drives
attribution, rotation and revocation lock the old credentials out."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ingest.settings import IngestSettings
from tests import factories, mqtt_probe
from tests.factories import Organization
from tests.ingest.harness import ROOT, IngestProcess, eventually, message, publish, reading


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ingest", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(db: psycopg.Connection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return db.execute(query, params).fetchall()


async def test_add_assign_rotate_unassign_revoke(
    db: psycopg.Connection[Any],
    org: Organization,
    ingest_settings: IngestSettings,
    ingest_process: Callable[..., IngestProcess],
) -> None:
    host, port = ingest_settings.mqtt_host, ingest_settings.mqtt_port
    patient = factories.create_patient(db, org.id)
    serial = factories.unique("cli")
    added = json.loads(
        cli("devices", "add", "--org", org.slug, "--serial", serial, "--kind", "pulse_oximeter", "--json")
    )
    password = added["password"]
    mqtt_probe.wait_until(host, port, serial, password, accepted=True)
    await ingest_process([serial]).ready()

    def refusals() -> list[tuple[Any, ...]]:
        return rows(db, "SELECT reason::text, message_id FROM ingest_rejections WHERE claimed_serial = %s", serial)

    def stored() -> list[tuple[Any, ...]]:
        return rows(
            db,
            "SELECT r.value, r.patient_id FROM vital_readings r JOIN devices d ON d.id = r.device_id"
            " WHERE d.serial = %s ORDER BY r.measured_at",
            serial,
        )

    now = datetime.now(UTC)
    await publish(ingest_settings, serial, password, [message("before", reading(97, type_="spo2", unit="%"))])
    await eventually(lambda: refusals() == [("unassigned_device", "before")])

    cli("devices", "assign", serial, "--patient", str(patient.id), "--since", "1h")
    at = now - timedelta(minutes=5)
    await publish(ingest_settings, serial, password, [message("after", reading(96, type_="spo2", unit="%", at=at))])
    await eventually(lambda: stored() == [(96.0, patient.id)])
    listed = json.loads(cli("devices", "list", "--org", org.slug, "--json"))
    assert [(d["serial"], d["patient_id"], d["status"]) for d in listed] == [(serial, str(patient.id), "active")]

    rotated = json.loads(cli("devices", "rotate-credentials", serial, "--json"))["password"]
    mqtt_probe.wait_until(host, port, serial, password, accepted=False)
    mqtt_probe.wait_until(host, port, serial, rotated, accepted=True)

    cli("devices", "unassign", serial)
    await asyncio.sleep(0.1)
    later = datetime.now(UTC)
    await publish(
        ingest_settings, serial, rotated, [message("unassigned", reading(95, type_="spo2", unit="%", at=later))]
    )
    await eventually(lambda: ("unassigned_device", "unassigned") in refusals())

    started = time.monotonic()
    cli("devices", "revoke", serial)
    mqtt_probe.wait_until(host, port, serial, rotated, accepted=False, timeout=5)
    assert time.monotonic() - started < 5
    status = rows(db, "SELECT status::text, credential_hash FROM devices WHERE serial = %s", serial)
    assert status == [("revoked", None)]
    actions = rows(
        db,
        "SELECT action FROM audit_logs a JOIN devices d ON d.id = a.entity_id WHERE d.serial = %s"
        " AND a.action LIKE 'device.%%' ORDER BY a.id",
        serial,
    )
    assert [a for (a,) in actions] == [
        "device.add",
        "device.assign",
        "device.rotate_credentials",
        "device.unassign",
        "device.revoke",
    ]


def test_errors_are_reported_without_a_traceback(org: Organization) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "devices", "revoke", factories.unique("nobody")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: no device with serial")
