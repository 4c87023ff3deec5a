"""A clinical scenario with injected faults, through the real broker and a real `python -m ingest serve`:
exactly the readings the simulator expects are stored, and every refusal it expects is recorded."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gmqtt
import psycopg
import pytest

from device_simulators.fault import FaultKind, FaultPlan, inject
from device_simulators.player import play
from device_simulators.publisher import Broker
from device_simulators.scenario import SCENARIOS, run_scenario
from ingest.settings import IngestSettings
from tests.conftest import MqttDeviceFactory
from tests.factories import Patient

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ingest_for(ingest_settings: IngestSettings, tmp_path: Path) -> Iterator[Any]:
    """Starts an ingest process that owns only the given devices' topics (its own persistent session)."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []
    logs: list[Any] = []

    def start(*serials: str) -> None:
        client_id = f"test-e2e-{secrets.token_hex(4)}"
        env = {
            **os.environ,
            "INGEST_MQTT_CLIENT_ID": client_id,
            "INGEST_MQTT_READINGS_FILTERS": json.dumps([f"devices/{s}/readings" for s in serials]),
            "INGEST_MQTT_STATUS_FILTERS": "[]",
            "INGEST_METRICS_PORT": "0",
            "PROCESSOR_TRANSPORT": "none",
        }
        log = (tmp_path / "ingest.log").open("ab")
        logs.append(log)
        cmd = [sys.executable, "-m", "ingest", "--log-level", "WARNING", "serve"]
        started.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), client_id))

    yield start
    for process, client_id in started:
        process.terminate()
        process.wait(30)
        asyncio.run(_end_session(ingest_settings, client_id))
    for log in logs:
        log.close()


async def _end_session(settings: IngestSettings, client_id: str) -> None:
    client = gmqtt.Client(client_id, clean_session=True)
    client.set_auth_credentials(settings.mqtt_ingest_user, settings.mqtt_ingest_password.get_secret_value())
    await client.connect(settings.mqtt_host, settings.mqtt_port, version=gmqtt.constants.MQTTv50)
    await client.disconnect()


async def _until(predicate: Any, limit_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    for _ in range(int(limit_s / 0.2) + 1):
        if predicate() or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.2)


async def test_faulty_scenario_is_stored_and_refused_exactly_as_expected(
    db: psycopg.Connection[Any],
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_settings: IngestSettings,
    ingest_for: Any,
) -> None:
    cuff, other = mqtt_device(kind="bp_cuff", assign_to=patient), mqtt_device()
    scenario = SCENARIOS["hypertensive_crisis"]
    _, clean = run_scenario(
        scenario,
        datetime.now(UTC) - timedelta(days=scenario.days),
        serial_prefix="e2e",
        timezone=patient.timezone,
        serials={kind: cuff.serial for kind in scenario.kinds},
    )
    plan = FaultPlan(
        rates={
            FaultKind.DUPLICATE: 0.3,
            FaultKind.OUT_OF_ORDER: 0.2,
            FaultKind.CLOCK_SKEW: 0.15,
            FaultKind.WRONG_UNIT: 0.15,
            FaultKind.MALFORMED: 0.15,
            FaultKind.OVERSIZED: 0.1,
            FaultKind.FOREIGN_TOPIC: 0.1,
        }
    )
    faulty = inject(clean, plan, seed=4, foreign_serial=other.serial, key="e2e").envelopes
    assert {e.fault for e in faulty} >= {"duplicate", "malformed", "wrong_unit", "oversized", "foreign_topic"}
    expected_stored = sum(e.expected.stored for e in faulty)
    expected_reasons = {e.expected.message_reason for e in faulty if not e.expected.broker_denied} | {
        r for e in faulty if not e.expected.broker_denied for r in e.expected.reading_reasons
    }
    expected_reasons.discard(None)

    ingest_for(cuff.serial)
    await asyncio.sleep(3)  # ingest connects and subscribes
    report = await play(
        faulty, {cuff.serial: cuff.password}, Broker(ingest_settings.mqtt_host, ingest_settings.mqtt_port)
    )
    assert report.as_expected, report

    def stored() -> int:
        row = db.execute(
            "SELECT count(*) FROM vital_readings r JOIN devices d ON d.id = r.device_id WHERE d.serial = %s",
            (cuff.serial,),
        ).fetchone()
        return int(row[0]) if row else 0

    def reasons() -> set[str]:
        rows = db.execute(
            "SELECT DISTINCT reason::text FROM ingest_rejections WHERE claimed_serial = %s", (cuff.serial,)
        ).fetchall()
        return {r[0] for r in rows}

    await _until(lambda: stored() >= expected_stored and reasons() >= expected_reasons, 30)
    await asyncio.sleep(1)  # nothing more may arrive
    assert stored() == expected_stored
    assert reasons() == expected_reasons
    rows = db.execute(
        "SELECT r.patient_id, r.metadata->'meta'->>'seq' FROM vital_readings r JOIN devices d ON d.id = r.device_id"
        " WHERE d.serial = %s",
        (cuff.serial,),
    ).fetchall()
    assert {r[0] for r in rows} == {patient.id}
    assert all(r[1] is not None for r in rows)
