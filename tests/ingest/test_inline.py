"""Inline mode end to end: committed readings reach the processors in the ingest process and raise alerts, also
when the process died between the commit and the hand-off (the outbox row is delivered at the next start)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg

from ingest.admission import Envelope, Limits
from ingest.identity import RecentIdentities
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry
from ingest.writer import Writer
from tests import factories
from tests.conftest import MqttDeviceFactory
from tests.factories import Patient
from tests.ingest.harness import IngestProcess, alerts, eventually, message, publish, reading


async def test_a_committed_reading_is_evaluated_inline(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Callable[..., IngestProcess],
) -> None:
    factories.create_requirement(db, patient, "spo2", warning_low=92, critical_low=88)
    device = mqtt_device(assign_to=patient, kind="pulse_oximeter")
    ingest = await ingest_process([device.serial], processor_transport="inline").ready()
    low = reading(84, type_="spo2", unit="%", at=datetime.now(UTC) - timedelta(seconds=30))
    await publish(ingest_settings, device.serial, device.password, [message("low", low)])
    await eventually(lambda: alerts(db, patient) == [("low", "critical", 84.0)], what="a critical low SpO2 alert")
    assert await ingest.metric("ingest_handoff_events_total", path="live") == 1


async def test_a_reading_committed_before_a_crash_is_evaluated_at_the_next_start(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
    ingest_process: Callable[..., IngestProcess],
) -> None:
    factories.create_requirement(db, patient, "spo2", warning_low=92, critical_low=88)
    device = factories.create_device(db, patient.organization_id, assign_to=patient, kind="pulse_oximeter")
    # The state a crash right after the commit leaves: readings and their outbox row committed, nothing delivered.
    payload = json.dumps({"message_id": "m", "readings": [reading(83, type_="spo2", unit="%")]}).encode()
    envelope = Envelope(f"devices/{device.serial}/readings", payload, datetime.now(UTC))
    written = await Writer(units, Limits(), RecentIdentities(0), "inline").write(ingest_conn, [envelope])
    assert written.outbox_id is not None
    assert alerts(db, patient) == []
    await ingest_process([device.serial], processor_transport="inline").ready()
    # The recovery scan delivers the shared outbox in id order: in the full suite it may first drain rows that
    # earlier tests' crashed processes left for the inline destination, hence the longer wait. Meanwhile the
    # processors' clock ticks every monitored patient at start and may reach this one first (that rebuild must not
    # count the pending reading as judged: tests/ingest/test_relay_recovery.py makes that order certain).
    await eventually(
        lambda: alerts(db, patient) == [("low", "critical", 83.0)], seconds=90, what="the alert after restart"
    )

    def pending() -> int:
        row = db.execute("SELECT count(*) FROM ingest_outbox WHERE id = %s", (written.outbox_id,)).fetchone()
        assert row is not None
        return int(row[0])

    await eventually(lambda: pending() == 0, what="the outbox row delivered and deleted")
