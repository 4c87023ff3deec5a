"""A writer that dies must stop the pipeline (the service then exits for its supervisor), never leave it hanging:
after a PostgreSQL stop the collector, cancelled with the failed writer, waited forever to hand an end-of-stream
marker to writers that were gone, and ingest stopped acknowledging without logging anything."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import pytest

from ingest.admission import Envelope
from ingest.database import as_ingest_error
from ingest.errors import DatabaseUnavailableError
from ingest.identity import RecentIdentities
from ingest.metrics import Metrics
from ingest.pipeline import Delivery, Lifecycle, Pipeline
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry
from ingest.writer import Writer
from tests.ingest.harness import reading


class WriterDiedError(Exception):
    pass


async def test_a_failed_writer_stops_the_pipeline_instead_of_hanging_it(units: UnitRegistry) -> None:
    settings = IngestSettings(ingest_writers=1, ingest_batch_max_size=1, ingest_batch_max_age_s=0.01)
    life = Lifecycle(5)
    pipeline = Pipeline(settings, Writer(units, settings.limits, RecentIdentities(0), None), None, Metrics(), life)
    now = datetime.now(UTC)
    payloads = [json.dumps({"message_id": f"m-{i}", "readings": [reading(60 + i)]}).encode() for i in range(5)]
    submitted = [asyncio.create_task(pipeline.submit(Envelope("devices/x/readings", p, now))) for p in payloads]

    async def writer_that_dies() -> None:
        await asyncio.sleep(0.3)  # meanwhile the collector fills the hand-over queue (one batch per writer)
        raise WriterDiedError

    with pytest.raises(ExceptionGroup) as caught:
        async with asyncio.timeout(10), asyncio.TaskGroup() as tasks:
            tasks.create_task(pipeline.run_collector())
            tasks.create_task(writer_that_dies())
    assert caught.group_contains(WriterDiedError)
    assert pipeline.abandon() == len(payloads)  # nothing acknowledged: the broker redelivers all of it
    assert await asyncio.gather(*submitted) == [False] * len(payloads)


def test_a_connection_in_a_broken_protocol_state_is_a_retriable_database_error() -> None:
    """What killed the writer after a PostgreSQL stop: the server's shutdown notice reached an idle connection, and
    its next query failed with asyncpg's InternalClientError. Retriable: the writer drops the connection and
    reconnects (so do the relay and the maintenance task)."""
    broken = asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    error = as_ingest_error(broken)
    assert isinstance(error, DatabaseUnavailableError)
    assert error.retriable


@pytest.mark.parametrize("steps", range(6))
async def test_the_collector_stops_when_cancelled_as_a_message_arrives(units: UnitRegistry, steps: int) -> None:
    """Python 3.11's asyncio.wait_for returns the item and swallows a cancellation that arrives as the inner get
    completes: the cancelled collector ran on and, its writers gone, waited forever. Cancelled `steps` loop steps
    after a message is queued, the collector must end every time."""
    settings = IngestSettings(ingest_writers=1, ingest_batch_max_age_s=0.01)
    pipeline = Pipeline(
        settings, Writer(units, settings.limits, RecentIdentities(0), None), None, Metrics(), Lifecycle(5)
    )
    collector = asyncio.create_task(pipeline.run_collector())
    await asyncio.sleep(0.05)  # the collector waits for a message
    payload = json.dumps({"message_id": "m", "readings": [reading()]}).encode()
    submitted = asyncio.create_task(pipeline.submit(Envelope("devices/x/readings", payload, datetime.now(UTC))))
    for _ in range(steps):
        await asyncio.sleep(0)
    collector.cancel()
    done, _ = await asyncio.wait([collector], timeout=2)
    assert done == {collector} and collector.cancelled()
    pipeline.abandon()
    assert await submitted is False


async def test_a_full_queue_makes_deliveries_wait_and_each_is_settled_once(units: UnitRegistry) -> None:
    """The MQTT adapter hands messages over without waiting (`deliver`); with no room it must wait (`enqueue`),
    and later messages queue behind the waiting one instead of overtaking it. Every message is settled exactly
    once: here abandoned (not durable, so never acknowledged)."""
    settings = IngestSettings(ingest_writers=1, ingest_queue_max=2)
    pipeline = Pipeline(
        settings, Writer(units, settings.limits, RecentIdentities(0), None), None, Metrics(), Lifecycle(5)
    )
    settled: list[tuple[int, bool]] = []

    def on_settled(delivery: Delivery, durable: bool) -> None:
        settled.append((delivery.token, durable))

    payload = json.dumps({"message_id": "m", "readings": [reading()]}).encode()
    deliveries = [Delivery(Envelope("devices/x/readings", payload, datetime.now(UTC)), on_settled, i) for i in range(4)]
    assert [pipeline.deliver(d) for d in deliveries[:3]] == [True, True, False]
    waiting = asyncio.create_task(pipeline.enqueue(deliveries[2]))
    await asyncio.sleep(0.01)
    assert not waiting.done() and pipeline.depth == 2
    assert pipeline.abandon() == 3  # also empties the queue: the waiting delivery gets its room
    await asyncio.wait_for(waiting, 1)
    assert pipeline.depth == 1
    assert pipeline.deliver(deliveries[3])
    assert pipeline.abandon() == 1  # the one that waited was settled already
    assert pipeline.abandon() == 0
    assert sorted(settled) == [(0, False), (1, False), (2, False), (3, False)]


async def test_a_batch_is_cut_by_size_without_waiting_for_its_age_and_the_open_batch_is_not_queue_depth(
    units: UnitRegistry,
) -> None:
    """The collector no longer wakes for every message: it sleeps until the open batch could be full or is due.
    A batch that fills is still written at once (size OR age), and the messages of the open batch, which now wait
    in the queue until then, are not reported as queue depth (they count as batched, as before)."""
    settings = IngestSettings(ingest_writers=1, ingest_batch_max_size=3, ingest_batch_max_age_s=30)
    metrics = Metrics()
    pipeline = Pipeline(
        settings, Writer(units, settings.limits, RecentIdentities(0), None), None, metrics, Lifecycle(5)
    )
    now = datetime.now(UTC)
    payloads = [json.dumps({"message_id": f"size-{i}", "readings": [reading(60 + i)]}).encode() for i in range(5)]
    # An unknown serial: each message is refused (stored, then acknowledged) without needing a device.
    envelopes = [Envelope(f"devices/size-cut-{now.timestamp()}/readings", p, now) for p in payloads]
    collector = asyncio.create_task(pipeline.run_collector())
    writer = asyncio.create_task(pipeline.run_writer())
    first = [asyncio.create_task(pipeline.submit(e)) for e in envelopes[:3]]
    assert await asyncio.wait_for(asyncio.gather(*first), 10) == [True] * 3  # long before the 30 s age
    later = [asyncio.create_task(pipeline.submit(envelopes[3]))]
    await asyncio.sleep(0.05)  # the collector takes it: the next batch is open
    later.append(asyncio.create_task(pipeline.submit(envelopes[4])))
    await asyncio.sleep(0.05)
    # The second waits in the queue until that batch is due (30 s) or full; the collector was not woken for it.
    assert not any(t.done() for t in later) and pipeline.depth == 1
    assert metrics.registry.get_sample_value("ingest_queue_depth_messages") == 0
    for task in (collector, writer):
        task.cancel()
    await asyncio.wait([collector, writer], timeout=5)
    assert pipeline.abandon() == 2
    assert await asyncio.gather(*later) == [False, False]
