"""The relay in this process against the real database: its live path and recovery scan each on their own
connection, recovery after its connections are cut, and the order of what it hands off. Each test relays a
destination of its own, so no other relay takes its outbox rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pytest

from ingest.admission import Envelope, Limits
from ingest.event import ReadingEvent
from ingest.identity import RecentIdentities
from ingest.metrics import Metrics
from ingest.relay import Handoff, Relay
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry
from ingest.writer import Writer, Written
from tests import factories
from tests.factories import Device, Patient
from tests.ingest.harness import TcpProxy, eventually, reading


class RecordingSink:
    """A sink that records what it was given; a delivery containing `hold` waits for `release` (then fails if
    `fail_held`), standing in for a slow or failing downstream."""

    def __init__(self) -> None:
        self.deliveries: list[list[ReadingEvent]] = []
        self.hold: UUID | None = None
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.fail_held = False

    async def deliver(self, events: Sequence[ReadingEvent]) -> None:
        if self.hold is not None and any(e.reading_id == self.hold for e in events):
            self.holding.set()
            await self.release.wait()
            if self.fail_held:
                self.fail_held = False
                raise RuntimeError("downstream refused the batch")
        self.deliveries.append(list(events))

    @property
    def delivered(self) -> set[UUID]:
        return {e.reading_id for d in self.deliveries for e in d}


class Outbox:
    """Commits readings (and their outbox row) for one device under a destination of the test's own."""

    def __init__(self, conn: asyncpg.Connection, units: UnitRegistry, device: Device) -> None:
        self.destination = f"kafka:test-relay-{secrets.token_hex(4)}"
        self._conn = conn
        self._writer = Writer(units, Limits(), RecentIdentities(0), self.destination)
        self._device = device
        self._count = 0

    async def commit(self, *measured: datetime) -> Written:
        readings = [reading(80 + i % 20, type_="heart_rate", unit="/min", at=at) for i, at in enumerate(measured)]
        self._count += 1
        payload = json.dumps({"message_id": f"m{self._count}", "readings": readings}).encode()
        envelope = Envelope(f"devices/{self._device.serial}/readings", payload, datetime.now(UTC))
        written = await self._writer.write(self._conn, [envelope])
        assert written.outbox_id is not None and len(written.events) == len(measured)
        return written

    def pending(self, db: psycopg.Connection[Any]) -> int:
        row = db.execute("SELECT count(*) FROM ingest_outbox WHERE destination = %s", (self.destination,)).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def outbox(
    db: psycopg.Connection[Any], patient: Patient, ingest_conn: asyncpg.Connection, units: UnitRegistry
) -> Outbox:
    device = factories.create_device(db, patient.organization_id, assign_to=patient, kind="pulse_oximeter")
    return Outbox(ingest_conn, units, device)


class Running:
    """A relay's two paths as tasks, stopped at the end of the test."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Running:
        self._tasks = [
            asyncio.create_task(self.relay.run_live(self.stop, lambda: None)),
            asyncio.create_task(self.relay.run_recovery(self.stop)),
        ]
        return self

    async def close(self) -> None:
        self.stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.relay.close()


@pytest.fixture
async def running() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        await r.close()


def relay_settings(settings: IngestSettings, **changes: Any) -> IngestSettings:
    return settings.model_copy(
        update={
            "ingest_relay_lease_s": 0.2,
            "ingest_relay_scan_interval_s": 0.1,
            "ingest_relay_retry_max_s": 0.5,
            "ingest_db_timeout_s": 3.0,
            **changes,
        }
    )


async def test_a_live_hand_off_commits_while_the_recovery_scan_holds_its_transaction(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    units: UnitRegistry,
    outbox: Outbox,
    running: list[Running],
) -> None:
    now = datetime.now(UTC)
    stranded = await outbox.commit(now - timedelta(minutes=3))
    sink = RecordingSink()
    sink.hold, sink.fail_held = stranded.events[0].reading_id, True
    relay = Relay(relay_settings(ingest_settings), sink, outbox.destination, lambda: units, Metrics())
    await asyncio.sleep(0.3)  # past the lease: the scan takes the stranded row and delivers it (held)
    running.append(Running(relay).start())
    await asyncio.wait_for(sink.holding.wait(), 10)

    live = await outbox.commit(now - timedelta(minutes=2))
    assert relay.offer(Handoff(live.outbox_id or 0, live.events))
    # The live path delivers and deletes its row on its own connection: committed at once, whatever the scan's
    # open transaction (which will roll back) does.
    await eventually(lambda: live.events[0].reading_id in sink.delivered, what="the live delivery")
    await eventually(lambda: outbox.pending(db) == 1, what="the live row deleted while the scan holds its page")

    sink.release.set()  # the held delivery fails; the next scan delivers the stranded row again
    await eventually(lambda: outbox.pending(db) == 0, what="the stranded row delivered after the failure")
    assert sink.delivered == {stranded.events[0].reading_id, live.events[0].reading_id}


async def test_the_relay_resumes_and_hands_off_everything_after_its_connections_are_cut(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    units: UnitRegistry,
    outbox: Outbox,
    running: list[Running],
) -> None:
    proxy = await TcpProxy(ingest_settings.postgres_host, ingest_settings.postgres_port).start()
    try:
        sink = RecordingSink()
        metrics = Metrics()
        settings = relay_settings(ingest_settings, postgres_port=proxy.port)
        relay = Relay(settings, sink, outbox.destination, lambda: units, metrics)
        running.append(Running(relay).start())
        start = datetime.now(UTC) - timedelta(minutes=30)
        committed: list[Written] = []

        async def commit(minute: int, *, offer: bool) -> None:
            written = await outbox.commit(*(start + timedelta(minutes=minute, seconds=s) for s in range(5)))
            committed.append(written)
            if offer:
                assert relay.offer(Handoff(written.outbox_id or 0, written.events))

        for minute in range(4):  # both paths in use: live batches and rows left to the scan
            await commit(minute, offer=minute % 2 == 0)
        await eventually(lambda: outbox.pending(db) == 0, what="the first batches handed off")

        await proxy.refuse()  # every relay connection dropped, new ones refused
        for minute in range(4, 10):
            await commit(minute, offer=minute % 2 == 0)
        await eventually(
            lambda: (metrics.registry.get_sample_value("ingest_handoff_failures_total") or 0) >= 2,
            what="both paths failing while the database is unreachable",
        )
        await asyncio.sleep(1)
        assert outbox.pending(db) > 0
        await proxy.start(proxy.port)  # the database is back

        await eventually(lambda: outbox.pending(db) == 0, what="every outbox row handed off after the outage")
        assert sink.delivered == {e.reading_id for w in committed for e in w.events}
    finally:
        await proxy.close()


async def test_hand_offs_reach_the_sink_in_measurement_order(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    units: UnitRegistry,
    outbox: Outbox,
    running: list[Running],
) -> None:
    """Writers may commit (and offer) a patient's newer message first; a page of stranded rows is read in outbox
    order. Either way the delivery is in measurement order, so the newest reading is judged last (live)."""
    sink = RecordingSink()
    relay = Relay(relay_settings(ingest_settings), sink, outbox.destination, lambda: units, Metrics())
    at = datetime.now(UTC) - timedelta(minutes=10)
    stranded = [await outbox.commit(at + timedelta(seconds=s)) for s in (40, 30, 10, 20)]
    await asyncio.sleep(0.3)
    assert await relay.recover_once() == 4
    assert [e.measured_at for e in sink.deliveries[-1]] == sorted(e.measured_at for w in stranded for e in w.events)

    newer = await outbox.commit(at + timedelta(minutes=2), at + timedelta(minutes=2, seconds=30))
    older = await outbox.commit(at + timedelta(minutes=1), at + timedelta(minutes=1, seconds=30))
    assert relay.offer(Handoff(newer.outbox_id or 0, newer.events))
    assert relay.offer(Handoff(older.outbox_id or 0, older.events))
    running.append(Running(relay).start())
    await eventually(lambda: outbox.pending(db) == 0, what="the live batches handed off")
    live = [e.measured_at for d in sink.deliveries[1:] for e in d]
    assert live == sorted(e.measured_at for w in (newer, older) for e in w.events)
