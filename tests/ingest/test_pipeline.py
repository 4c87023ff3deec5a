"""The pipeline in-process against the real database: batching, acknowledgement after commit, and isolation of
a message the database refuses (here: a reading older than any partition, let through by a lenient age limit)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ingest.admission import Envelope
from ingest.identity import RecentIdentities
from ingest.metrics import Metrics
from ingest.pipeline import Lifecycle, Pipeline
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry
from ingest.writer import Writer
from tests import factories
from tests.factories import Organization, Patient
from tests.ingest.harness import reading


async def test_a_message_the_database_refuses_is_isolated_and_the_rest_is_stored(
    db: psycopg.Connection[Any], org: Organization, patient: Patient, units: UnitRegistry
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient, since=datetime.now(UTC) - timedelta(days=3650))
    settings = IngestSettings(ingest_max_age_s=4000 * 86400, ingest_batch_max_age_s=0.05, ingest_writers=1)
    metrics = Metrics()
    life = Lifecycle(5)
    pipeline = Pipeline(settings, Writer(units, settings.limits, RecentIdentities(0), None), None, metrics, life)
    now = datetime.now(UTC)
    ancient = now - timedelta(days=3000)  # no vital_readings partition covers it

    def envelope(i: int, at: datetime) -> Envelope:
        payload = json.dumps({"message_id": f"m-{i}", "readings": [reading(60 + i, at=at)]}).encode()
        return Envelope(f"devices/{device.serial}/readings", payload, now)

    envelopes = [envelope(i, now - timedelta(minutes=i + 1)) for i in range(6)] + [envelope(6, ancient)]
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(pipeline.run_collector())
        tasks.create_task(pipeline.run_writer())
        acked = await asyncio.gather(*(pipeline.submit(e) for e in envelopes))
        life.request_stop()
    assert acked == [True] * 7
    stored = db.execute("SELECT message_id FROM vital_readings WHERE device_id = %s ORDER BY 1", (device.id,))
    assert [m for (m,) in stored] == [f"m-{i}" for i in range(6)]
    refusal = db.execute(
        "SELECT reason::text, message_id, detail FROM ingest_rejections WHERE claimed_serial = %s", (device.serial,)
    ).fetchall()
    assert len(refusal) == 1
    assert refusal[0][:2] == ("invalid_message", "m-6")
    assert refusal[0][2].startswith("storage refused: 23514")
    assert (metrics.registry.get_sample_value("ingest_db_errors_total", {"kind": "refused"}) or 0) >= 1
