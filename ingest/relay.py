"""The hand-off to processors: delivers committed readings to a Sink, then deletes their outbox rows.

Live path: the writer offers each committed batch (non-blocking). Recovery path: a periodic scan delivers outbox
rows older than a lease (left by a crash, or by a full live queue), oldest first, locking them with SKIP LOCKED so
several ingest processes share the work. Delivery is at least once; processors' outputs are idempotent.

Each path owns its database connection (`_Link`): the recovery scan holds a transaction open while it delivers,
so sharing one connection let the live path's DELETE run inside that transaction or collide with it ("another
operation is in progress"), and a failure on one path closed the connection under the other. A failed connection
is terminated and replaced by the path that saw it fail.

Order: every delivery is sorted by measurement time (stable, so a patient's readings keep their order otherwise);
live batches are taken in outbox id order. The engine judges only the newest reading of a type as live, so a
reading delivered after a newer one of the same patient would be judged retrospective (it never pages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol

import asyncpg

from ingest.database import as_ingest_error, connect
from ingest.event import ReadingEvent
from ingest.metrics import Metrics
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry

logger = logging.getLogger(__name__)

_MAX_EVENTS_PER_DELIVERY = 5_000
_SCAN = """
SELECT id, device_ids, vital_type_ids, measured_ats FROM ingest_outbox
 WHERE destination = $1 AND created_at < now() - make_interval(secs => $2)
 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
"""
# The readings of a page of outbox rows, in outbox order (row, then position in the row).
_READINGS = """
SELECT v.id, v.organization_id, v.patient_id, v.device_id, v.vital_type_id, v.value, v.measured_at, v.received_at
  FROM unnest($1::bigint[]) WITH ORDINALITY AS page(outbox_id, position)
  JOIN ingest_outbox o ON o.id = page.outbox_id
 CROSS JOIN LATERAL unnest(o.device_ids, o.vital_type_ids, o.measured_ats) WITH ORDINALITY
       AS k(device_id, vital_type_id, measured_at, item)
  JOIN vital_readings v USING (device_id, vital_type_id, measured_at)
 ORDER BY page.position, k.item
"""


class Sink(Protocol):
    """Where committed readings go: the inline processors, or a Kafka topic. Raises when delivery failed."""

    async def deliver(self, events: Sequence[ReadingEvent]) -> None: ...


@dataclass(frozen=True, slots=True)
class Handoff:
    outbox_id: int
    events: tuple[ReadingEvent, ...]


def in_hand_off_order(handoffs: Sequence[Handoff]) -> list[ReadingEvent]:
    """The events of these batches as one delivery: by outbox id, then by measurement time (stable)."""
    events = [e for h in sorted(handoffs, key=lambda h: h.outbox_id) for e in h.events]
    events.sort(key=_measured_at)
    return events


def _measured_at(event: ReadingEvent) -> datetime:
    return event.measured_at


class _Link:
    """The database connection of one coroutine: opened on first use, terminated and reopened after a failure."""

    def __init__(self, settings: IngestSettings) -> None:
        self._settings = settings
        self._conn: asyncpg.Connection | None = None

    async def get(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self._settings)
        return self._conn

    def discard(self, conn: asyncpg.Connection) -> None:
        """Drops `conn` after a failure (or a cancellation mid-operation): its protocol state is unknown, so it is
        terminated, not closed; the next `get` opens a new one. A connection already replaced is left alone."""
        if self._conn is conn:
            self._conn = None
        conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=2)
        except Exception:
            conn.terminate()


class Relay:
    def __init__(
        self,
        settings: IngestSettings,
        sink: Sink,
        destination: str,
        units: Callable[[], UnitRegistry],
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._destination = destination
        self._sink = sink
        self._units = units
        self._metrics = metrics
        self._queue: asyncio.Queue[Handoff] = asyncio.Queue(settings.ingest_relay_queue_max)
        self._live = _Link(settings)
        self._recovery = _Link(settings)

    def offer(self, handoff: Handoff) -> bool:
        """Queues a committed batch for live delivery; False when the queue is full (the outbox keeps it)."""
        try:
            self._queue.put_nowait(handoff)
        except asyncio.QueueFull:
            self._metrics.handoff_deferred.inc()
            return False
        return True

    async def run_live(self, stop: asyncio.Event, deadline: Callable[[], float | None]) -> None:
        """Delivers offered batches until `stop` is set and the queue is drained (or the deadline passed)."""
        while True:
            if stop.is_set() and self._queue.empty():
                return
            try:
                async with asyncio.timeout(0.2):  # not wait_for: it can swallow a cancellation on Python 3.11
                    first = await self._queue.get()
            except TimeoutError:
                continue
            batch = [first]
            count = len(first.events)
            while count < _MAX_EVENTS_PER_DELIVERY and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                count += len(batch[-1].events)
            events = in_hand_off_order(batch)
            if not await self._with_retry(partial(self._sink.deliver, events), deadline):
                return
            self._metrics.handoff_events.labels("live").inc(len(events))
            await self._with_retry(partial(self._delete, [h.outbox_id for h in batch]), deadline)

    async def run_recovery(self, stop: asyncio.Event) -> None:
        """Periodically delivers outbox rows older than the lease, and reports the backlog."""
        while not stop.is_set():
            try:
                while not stop.is_set() and await self.recover_once() > 0:
                    pass
                await self._report_backlog()
            except Exception as exc:  # a failed scan is retried at the next interval (on a new connection)
                error = as_ingest_error(exc)
                self._metrics.handoff_failures.inc()
                logger.warning("outbox scan failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._settings.ingest_relay_scan_interval_s)

    async def recover_once(self, limit: int = 50) -> int:
        """Delivers and deletes one page of expired outbox rows (oldest first); returns how many rows it handled.

        The page's rows stay locked (FOR UPDATE SKIP LOCKED) until their deletion commits, so another ingest
        process skips them; on any failure the transaction rolls back and the rows wait for the next scan."""
        conn = await self._recovery.get()
        sink_failed = False
        try:
            async with conn.transaction():
                rows = await conn.fetch(_SCAN, self._destination, self._settings.ingest_relay_lease_s, limit)
                if not rows:
                    return 0
                ids = [r["id"] for r in rows]
                events = sorted(self._events(await conn.fetch(_READINGS, ids)), key=_measured_at)
                try:
                    await self._sink.deliver(events)
                except Exception:
                    sink_failed = True
                    self._metrics.handoff_failures.inc()
                    raise
                await conn.execute("DELETE FROM ingest_outbox WHERE id = ANY($1::bigint[])", ids)
        except BaseException:
            if not sink_failed:  # the connection failed, or was cancelled mid-operation
                self._recovery.discard(conn)
            raise
        self._metrics.handoff_events.labels("recovery").inc(len(events))
        logger.info("outbox recovery delivered %d readings from %d rows", len(events), len(rows))
        return len(rows)

    def _events(self, rows: Sequence[asyncpg.Record]) -> list[ReadingEvent]:
        units = self._units()
        events: list[ReadingEvent] = []
        for r in rows:
            vital = units.by_id[r["vital_type_id"]]
            events.append(
                ReadingEvent(
                    reading_id=r["id"],
                    organization_id=r["organization_id"],
                    patient_id=r["patient_id"],
                    device_id=r["device_id"],
                    vital_type=vital.code,
                    vital_type_id=vital.id,
                    value=r["value"],
                    unit=vital.canonical_unit,
                    measured_at=r["measured_at"],
                    received_at=r["received_at"],
                )
            )
        return events

    async def close(self) -> None:
        await self._live.close()
        await self._recovery.close()

    async def _report_backlog(self) -> None:
        conn = await self._recovery.get()
        try:
            backlog = await conn.fetchval(
                "SELECT count(*) FROM ingest_outbox WHERE destination = $1", self._destination
            )
        except BaseException:
            self._recovery.discard(conn)
            raise
        self._metrics.outbox_backlog.set(backlog)

    async def _delete(self, ids: list[int]) -> None:
        conn = await self._live.get()
        try:
            await conn.execute("DELETE FROM ingest_outbox WHERE id = ANY($1::bigint[])", ids)
        except BaseException:
            self._live.discard(conn)
            raise

    async def _with_retry(self, attempt: Callable[[], Awaitable[None]], deadline: Callable[[], float | None]) -> bool:
        """Runs `attempt` until it succeeds (True) or the shutdown deadline passes (False)."""
        delay = 0.1
        loop = asyncio.get_running_loop()
        while True:
            try:
                await attempt()
                return True
            except Exception as exc:
                self._metrics.handoff_failures.inc()
                logger.warning("hand-off failed, retrying in %.1fs: %s", delay, as_ingest_error(exc))
            end = deadline()
            if end is not None and loop.time() + delay > end:
                return False
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._settings.ingest_relay_retry_max_s)
