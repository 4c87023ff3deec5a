"""The relay's recovery scan into the inline processors, in this process: a reading committed before a crash is
evaluated at the next start, whatever the processors did with the patient in the meantime."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psycopg

from ingest.admission import Envelope, Limits
from ingest.identity import RecentIdentities
from ingest.metrics import Metrics
from ingest.relay import Relay
from ingest.settings import IngestSettings
from ingest.sinks import InlineSink
from ingest.units import UnitRegistry
from ingest.writer import Writer
from processors.inline import InlineProcessor
from processors.settings import ProcessorSettings
from tests import factories
from tests.factories import Patient
from tests.ingest.harness import alerts, reading


async def commit_before_crash(
    db: psycopg.Connection[Any],
    patient: Patient,
    conn: asyncpg.Connection,
    units: UnitRegistry,
    destination: str,
    value: float,
) -> int:
    """The state a crash right after the commit leaves: the reading and its outbox row committed, not delivered."""
    device = factories.create_device(db, patient.organization_id, assign_to=patient, kind="pulse_oximeter")
    payload = json.dumps({"message_id": "m", "readings": [reading(value, type_="spo2", unit="%")]}).encode()
    envelope = Envelope(f"devices/{device.serial}/readings", payload, datetime.now(UTC))
    written = await Writer(units, Limits(), RecentIdentities(0), destination).write(conn, [envelope])
    assert written.outbox_id is not None
    return written.outbox_id


async def test_a_recovered_reading_is_evaluated_although_the_clock_visited_the_patient_first(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    patient: Patient,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
    processor_pool: asyncpg.Pool,
) -> None:
    factories.create_requirement(db, patient, "spo2", warning_low=92, critical_low=88)
    destination = f"kafka:test-relay-{secrets.token_hex(4)}"  # a destination of its own
    outbox_id = await commit_before_crash(db, patient, ingest_conn, units, destination, 83)
    processor = InlineProcessor(processor_pool, ProcessorSettings().engine())
    # At the next start the processors' clock may reach the patient before the relay's recovery scan does.
    assert await processor.tick(patients=[patient.id]) == 1
    settings = ingest_settings.model_copy(update={"ingest_relay_lease_s": 0.01})
    relay = Relay(settings, InlineSink(processor.deliver), destination, lambda: units, Metrics())
    try:
        await asyncio.sleep(0.05)
        assert await relay.recover_once() == 1
    finally:
        await relay.close()
    assert db.execute("SELECT count(*) FROM ingest_outbox WHERE id = %s", (outbox_id,)).fetchone() == (0,)
    assert alerts(db, patient) == [("low", "critical", 83.0)]
