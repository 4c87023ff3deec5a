"""The hand-off is never held back by one patient: an outbox row whose readings include a patient the processors
cannot evaluate (a deterministic failure) is delivered, its other patients' alerts are written, the failing
patient's reading is in `processor_quarantine`, and the row is deleted."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
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
from processors.metrics import ProcessorMetrics
from processors.quarantine import list_quarantined
from processors.quarantine_cli import retry
from processors.settings import ProcessorSettings
from tests import factories
from tests.factories import Device, Organization, Patient
from tests.ingest.harness import alerts, reading
from tests.processors.test_quarantine import poison


def monitored_patient(db: psycopg.Connection[Any], org: Organization) -> tuple[Patient, Device]:
    patient = factories.create_patient(db, org.id)
    factories.create_care_plan(db, patient)
    nurse = factories.create_provider(db, org.id, provider_type="nurse")
    factories.add_to_care_team(db, patient, nurse, role="nurse")
    factories.create_requirement(db, patient, "spo2", warning_low=92, critical_low=88)
    return patient, factories.create_device(db, org.id, assign_to=patient, kind="pulse_oximeter")


async def commit(
    conn: asyncpg.Connection, units: UnitRegistry, destination: str, devices: list[Device], value: float, at: datetime
) -> int:
    """What ingest commits for one MQTT batch: each device's reading and one outbox row for them all."""
    item = reading(value, type_="spo2", unit="%", at=at)
    envelopes = [
        Envelope(
            f"devices/{d.serial}/readings",
            json.dumps({"message_id": secrets.token_hex(4), "readings": [item]}).encode(),
            datetime.now(UTC),
        )
        for d in devices
    ]
    written = await Writer(units, Limits(), RecentIdentities(0), destination).write(conn, envelopes)
    assert written.outbox_id is not None
    return written.outbox_id


async def test_an_outbox_row_with_a_poisoned_patient_is_delivered_and_deleted(
    db: psycopg.Connection[Any],
    org: Organization,
    ingest_settings: IngestSettings,
    ingest_conn: asyncpg.Connection,
    units: UnitRegistry,
    processor_pool: asyncpg.Pool,
) -> None:
    people = [monitored_patient(db, org) for _ in range(3)]
    (sick, sick_device), healthy = people[0], people[1:]
    destination = f"kafka:test-relay-{secrets.token_hex(4)}"  # a destination of its own
    metrics = ProcessorMetrics()
    config = ProcessorSettings().engine()
    processor = InlineProcessor(processor_pool, config, on_quarantine=metrics.count_quarantined)
    settings = ingest_settings.model_copy(update={"ingest_relay_lease_s": 0.01})
    relay = Relay(settings, InlineSink(processor.deliver), destination, lambda: units, Metrics())
    now = datetime.now(UTC)
    try:
        await commit(ingest_conn, units, destination, [sick_device], 97, now - timedelta(minutes=2))
        await asyncio.sleep(0.05)
        assert await relay.recover_once() == 1
        poison(db, sick.id)
        outbox_id = await commit(
            ingest_conn, units, destination, [sick_device, *(d for _, d in healthy)], 83, now - timedelta(minutes=1)
        )
        await asyncio.sleep(0.05)
        assert await relay.recover_once() == 1
    finally:
        await relay.close()
    assert db.execute("SELECT count(*) FROM ingest_outbox WHERE id = %s", (outbox_id,)).fetchone() == (0,)
    for patient, _ in healthy:
        assert alerts(db, patient) == [("low", "critical", 83.0)]
    assert alerts(db, sick) == []
    async with processor_pool.acquire() as conn:
        held = await list_quarantined(conn, patients=[sick.id])
    assert [(q.error_class, q.sqlstate) for q in held] == [("DataError", "22000")]
    assert metrics.registry.get_sample_value("processors_quarantined_events_total", {"kind": "reading"}) == 1

    db.execute("DELETE FROM processor_states WHERE patient_id = %s", (sick.id,))
    report = await retry(processor_pool, config, patients=[sick.id])
    assert (report.resolved, report.failed_events) == (1, 0)
    assert alerts(db, sick) == [("low", "critical", 83.0)]
