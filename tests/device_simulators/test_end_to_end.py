"""A clinical scenario with injected faults, through the real broker and a real `python -m ingest serve`:
exactly the readings the simulator expects are stored, and every refusal it expects is recorded."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from device_simulators.fault import FaultKind, FaultPlan, inject
from device_simulators.player import play
from device_simulators.publisher import Broker
from device_simulators.scenario import SCENARIOS, day_zero, run_scenario
from device_simulators.timeline import Timeline, compress
from ingest.settings import IngestSettings
from tests.conftest import MqttDeviceFactory
from tests.device_simulators.conftest import IngestFor, until
from tests.factories import Patient


async def test_faulty_scenario_is_stored_and_refused_exactly_as_expected(
    db: psycopg.Connection[Any],
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_settings: IngestSettings,
    ingest_for: IngestFor,
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

    await until(lambda: stored() >= expected_stored and reasons() >= expected_reasons, 30)
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


@pytest.mark.parametrize("live", [False, True], ids=["backfilled", "live"])
async def test_a_skewed_device_clock_is_judged_as_the_player_counted(
    live: bool,
    db: psycopg.Connection[Any],
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_settings: IngestSettings,
    ingest_for: IngestFor,
) -> None:
    """A cuff whose clock runs 20 min ahead. Backfilled (sent at once, hours or days after measuring) each skewed
    reading is in the past when it arrives and is stored; live (compressed real time, sent as measured) it is
    20 min in the future when it arrives and refused as future_timestamp. Ingest stores and refuses exactly what
    the player counted for each message as it published it."""
    cuff = mqtt_device(kind="bp_cuff", assign_to=patient)
    scenario = SCENARIOS["hypertensive_crisis"]
    now = datetime.now(UTC)
    start = now - timedelta(days=scenario.days)
    _, clean = run_scenario(
        scenario,
        start,
        serial_prefix="skew",
        timezone=patient.timezone,
        serials={kind: cuff.serial for kind in scenario.kinds},
    )
    if live:
        first = day_zero(start, patient.timezone).astimezone(UTC)
        span = timedelta(days=scenario.days)
        clean = compress(clean, Timeline.fitting(first, first + span, now, timedelta(seconds=6)))
    envelopes = inject(clean, FaultPlan(rates={FaultKind.CLOCK_SKEW: 0.5}), seed=1, key="skew").envelopes
    skewed_readings = sum(len(e.message.readings) for e in envelopes if e.fault == "clock_skew" and e.message)
    assert skewed_readings >= 6

    ingest_for(cuff.serial)
    await asyncio.sleep(3)  # ingest connects and subscribes
    broker = Broker(ingest_settings.mqtt_host, ingest_settings.mqtt_port)
    report = await play(envelopes, {cuff.serial: cuff.password}, broker, speed=1.0 if live else 0.0)
    assert report.as_expected, report
    assert report.expected_refusals == (Counter({"future_timestamp": skewed_readings}) if live else Counter())
    total = sum(len(e.message.readings) for e in envelopes if e.message)
    assert report.expected_stored == total - (skewed_readings if live else 0)

    def counts() -> tuple[int, int]:
        stored = db.execute(
            "SELECT count(*) FROM vital_readings r JOIN devices d ON d.id = r.device_id WHERE d.serial = %s",
            (cuff.serial,),
        ).fetchone()
        refused = db.execute(
            "SELECT count(*) FROM ingest_rejections WHERE claimed_serial = %s AND reason = 'future_timestamp'",
            (cuff.serial,),
        ).fetchone()
        return (int(stored[0]) if stored else 0, int(refused[0]) if refused else 0)

    expected = (report.expected_stored, report.expected_refusals["future_timestamp"])
    await until(lambda: counts() == expected, 30)
    await asyncio.sleep(1)  # nothing more may arrive
    assert counts() == expected
