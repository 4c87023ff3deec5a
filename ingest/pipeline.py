"""Received messages -> batches -> writers -> acknowledgements, with bounded queues end to end.

A message is settled once: True once its readings are committed or its refusal is stored (the MQTT adapter then
sends PUBACK), or False when the service stops before that (no PUBACK: the broker redelivers). The MQTT adapter
hands messages over synchronously with `offer` and a settle callback (no task or future per message); `submit`
is the awaitable form.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ingest.admission import Envelope
from ingest.batching import BatchPolicy
from ingest.clock import Monotonic
from ingest.database import connect
from ingest.errors import BatchRefusedError, IngestError
from ingest.metrics import Metrics
from ingest.rejection import Rejection, RejectionReason
from ingest.relay import Handoff, Relay
from ingest.settings import IngestSettings
from ingest.writer import Writer, Written, touch_devices

logger = logging.getLogger(__name__)


Settle = Callable[["Delivery", bool], None]


class Delivery:
    """A received message waiting for its fate: `settle` calls `on_settled` once, with True (acknowledge) or False
    (do not). `token` is the caller's (the MQTT packet id, or the future of `Pipeline.submit`)."""

    __slots__ = ("envelope", "on_settled", "settled", "token")

    def __init__(self, envelope: Envelope, on_settled: Settle, token: Any) -> None:
        self.envelope = envelope
        self.on_settled = on_settled
        self.token = token
        self.settled = False

    def settle(self, durable: bool) -> bool:
        """Settles the message unless it already was; returns whether this call did."""
        if self.settled:
            return False
        self.settled = True
        self.on_settled(self, durable)
        return True


def _resolve(delivery: Delivery, durable: bool) -> None:
    done: asyncio.Future[bool] = delivery.token
    if not done.done():
        done.set_result(durable)


class Lifecycle:
    """Shared shutdown state: `stop` (stop taking messages), `drained` (writers finished) and the grace deadline."""

    def __init__(self, grace_s: float) -> None:
        self.stop = asyncio.Event()
        self.drained = asyncio.Event()
        self.grace_s = grace_s
        self._deadline: float | None = None

    def request_stop(self) -> None:
        if not self.stop.is_set():
            self._deadline = asyncio.get_running_loop().time() + self.grace_s
            self.stop.set()

    def deadline(self) -> float | None:
        """The loop time by which shutdown must be complete; None while running."""
        return self._deadline

    def past_deadline(self) -> bool:
        return self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline


class Pipeline:
    def __init__(
        self,
        settings: IngestSettings,
        writer: Writer,
        relay: Relay | None,
        metrics: Metrics,
        lifecycle: Lifecycle,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._relay = relay
        self._metrics = metrics
        self._life = lifecycle
        self._monotonic = monotonic
        self._policy: BatchPolicy = settings.batch_policy
        self._inbound: asyncio.Queue[Delivery] = asyncio.Queue(settings.ingest_queue_max)
        # At most one batch waiting per writer: beyond that the collector waits and the inbound queue fills.
        self._batches: asyncio.Queue[list[Delivery] | None] = asyncio.Queue(settings.ingest_writers)
        self._seen_written: dict[UUID, float] = {}
        # Received and not yet settled (abandon() settles them as not durable); waiting for room in the queue.
        self._pending: set[Delivery] = set()
        self._waiting = 0
        # The collector sleeps until the queue holds `_wake_at` messages (1 with no batch open, the room left in the
        # open batch otherwise) or the batch's deadline: not once per arriving message.
        self._wake = asyncio.Event()
        self._wake_at = 1
        self._open_room = 0  # room left in the open batch (0: none open); its share of the queue is batched already
        # The service starts only once the database answered; a failed write clears this, a commit sets it.
        self.database_ok = True
        metrics.queue_depth.set_function(self._unbatched)

    @property
    def depth(self) -> int:
        return self._inbound.qsize()

    def _unbatched(self) -> int:
        """The queue depth metric: received, not yet in a batch. The open batch now takes its messages from the queue
        only at its deadline (or when full); they were counted out of the queue as they arrived, and still are."""
        return max(0, self._inbound.qsize() - self._open_room)

    def deliver(self, delivery: Delivery) -> bool:
        """Queues a message without waiting (its `on_settled` is called later, once).

        Returns False when the queue has no room (or others already wait for it): the caller then awaits
        `enqueue(delivery)`, so backpressure is the same as `submit`'s.
        """
        if self._waiting or self._inbound.full():
            return False
        self._pending.add(delivery)
        self._inbound.put_nowait(delivery)
        if self._inbound.qsize() >= self._wake_at:
            self._wake.set()
        return True

    async def enqueue(self, delivery: Delivery) -> None:
        """Queues a message, waiting while the queue is full."""
        self._pending.add(delivery)
        self._waiting += 1
        try:
            await self._inbound.put(delivery)
        except BaseException:
            self._pending.discard(delivery)
            raise
        finally:
            self._waiting -= 1
        if self._inbound.qsize() >= self._wake_at:
            self._wake.set()

    async def submit(self, envelope: Envelope) -> bool:
        """Queues a message (waiting while the queue is full) and returns whether it became durable."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self.enqueue(Delivery(envelope, _resolve, done))
        return await done

    async def run_collector(self) -> None:
        """Cuts the inbound stream into batches by size or age; after stop, flushes what was received."""
        batch: list[Delivery] = []
        first_at: float | None = None
        while True:
            if self._life.stop.is_set() and self._inbound.empty():
                break
            if first_at is None:
                timeout, self._wake_at, self._open_room = 0.2, 1, 0
            else:
                timeout = max(0.0, self._policy.deadline(first_at) - self._monotonic())
                self._wake_at = self._open_room = self._policy.max_size - len(batch)
            if self._inbound.qsize() < self._wake_at:
                self._wake.clear()
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that arrives as the
                # awaited step completes; the cancelled collector then waited forever on writers that were gone.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            if not self._inbound.empty():
                first_at = first_at if first_at is not None else self._monotonic()
                while not self._policy.is_full(len(batch)) and not self._inbound.empty():
                    batch.append(self._inbound.get_nowait())
            if self._policy.is_due(len(batch), first_at, self._monotonic()):
                self._open_room = 0
                await self._batches.put(batch)
                batch, first_at = [], None
        self._open_room = 0
        if batch:
            await self._batches.put(batch)
        # Only after a normal end. A collector cancelled because a writer failed must not wait here: the writers are
        # gone, the bounded queue stays full, and the pipeline hung silently (seen after a PostgreSQL stop).
        for _ in range(self._settings.ingest_writers):
            await self._batches.put(None)

    async def run_writer(self) -> None:
        """Writes batches until the collector is done; holds its own connection (reconnecting with backoff)."""
        conn: asyncpg.Connection | None = None
        try:
            while (batch := await self._batches.get()) is not None:
                try:
                    conn = await self._write_batch(conn, batch)
                finally:
                    self._settle(batch, False)
        except Exception:
            logger.exception("writer failed")
            raise
        finally:
            if conn is not None:
                conn.terminate()

    async def _write_batch(self, conn: asyncpg.Connection | None, batch: list[Delivery]) -> asyncpg.Connection | None:
        delay = 0.05
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await connect(self._settings, staging=True)
                started = time.perf_counter()
                written = await self._writer.write(conn, [d.envelope for d in batch])
                self._committed(batch, written, time.perf_counter() - started)
                await self._touch(conn, written)
                return conn
            except BatchRefusedError as exc:
                self._metrics.db_errors.labels("refused").inc()
                logger.error("database refused a batch of %d messages: %s", len(batch), exc)
                return await self._isolate(conn, batch, exc)
            except IngestError as exc:
                if not exc.retriable:
                    raise
                self.database_ok = False
                self._metrics.db_errors.labels("retriable").inc()
                logger.warning("write failed, retrying in %.2fs: %s", delay, exc)
                if conn is not None:
                    conn.terminate()
                    conn = None
            deadline = self._life.deadline()
            if deadline is not None and asyncio.get_running_loop().time() + delay > deadline:
                logger.warning("shutdown deadline: %d messages left unacknowledged for redelivery", len(batch))
                return conn
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._settings.ingest_db_retry_max_s)

    async def _isolate(
        self, conn: asyncpg.Connection | None, batch: list[Delivery], error: BatchRefusedError
    ) -> asyncpg.Connection | None:
        """Finds the message(s) PostgreSQL refuses by halving the batch, so one poison message blocks nothing."""
        if len(batch) > 1:
            middle = len(batch) // 2
            for half in (batch[:middle], batch[middle:]):
                conn = await self._write_batch(conn, half)
            return conn
        (delivery,) = batch
        if conn is None:
            return None
        refusal = Rejection(RejectionReason.INVALID_MESSAGE, f"storage refused: {error}")
        try:
            written = await self._writer.refuse(conn, delivery.envelope, refusal)
        except IngestError as exc:
            logger.error("cannot store a refusal either; the message stays unacknowledged: %s", exc)
            return conn
        self._committed(batch, written, 0.0)
        return conn

    def _committed(self, batch: list[Delivery], written: Written, seconds: float) -> None:
        self.database_ok = True
        self._settle(batch, True)
        self._metrics.acks.inc(len(batch))
        self._metrics.record(written, seconds)
        if written.outbox_id is not None and self._relay is not None:
            self._relay.offer(Handoff(written.outbox_id, written.events))

    async def _touch(self, conn: asyncpg.Connection, written: Written) -> None:
        now = self._monotonic()
        interval = self._settings.ingest_last_seen_interval_s
        due: dict[UUID, datetime] = {}
        for outcome in written.outcomes:
            device = outcome.verdict.device
            if device is None or outcome.stored == 0:
                continue
            if now - self._seen_written.get(device.id, -interval - 1) >= interval:
                due[device.id] = outcome.verdict.envelope.received_at
        if not due:
            return
        try:
            await touch_devices(conn, due)
        except IngestError as exc:
            logger.warning("last_seen_at update skipped: %s", exc)
            return
        for device_id in due:
            self._seen_written[device_id] = now
        if len(self._seen_written) > 1_000_000:
            self._seen_written.clear()

    def _settle(self, batch: list[Delivery], durable: bool) -> None:
        for delivery in batch:
            self._pending.discard(delivery)
            delivery.settle(durable)  # once: a message already settled is left as it is

    def abandon(self) -> int:
        """Settles every message not yet written as not durable (once the writers are done or out of time)."""
        while not self._inbound.empty():
            self._inbound.get_nowait()
        pending, self._pending = self._pending, set()
        return sum(delivery.settle(False) for delivery in pending)
