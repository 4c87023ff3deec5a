"""The Faust runner (scale-out): consumes committed readings from Kafka, keyed by patient id.

    python -m processors faust worker --without-web

Configured from `ProcessorSettings` (environment / .env) when imported. One agent takes batches of events
(`stream.noack_take`, acknowledged after the commit), groups them by patient (Kafka keeps each patient's events in
order within its partition), and runs the batch step (`processors.batch.run_batch`: one transaction, four round
trips) with the engine and the writes the inline runner uses. The engine state lives in a Faust table
(`patient-states`, changelog-backed, co-partitioned with the readings topic), so a batch needs no state read from
the database. The database keeps the authoritative copy (`processor_states`, written in the same transaction as the
outputs, with a version); the table is updated only after the commit. After a crash between the two, the table is
older than the database: the version check (part of the batch's first call) notices and takes the database's copy,
so the events Kafka delivers again are recognised as seen and nothing is written twice. Kafka transactions are not
used: processing_guarantee=at_least_once with idempotent outputs.

Ticks travel on the same topic as `{"tick": ...}` records keyed by patient id: the leader worker's timer
produces one per monitored patient every `processor_tick_interval_s` (0: none; tests produce their own).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import faust
import mode
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP
from mode.utils import logging as mode_logging

from processors.batch import BatchResult, run_batch
from processors.codec import load_state
from processors.contexts import ContextCache, monitored_patients
from processors.errors import BadEventError, StateError, StoreError
from processors.events import CommittedReading, Event, Tick, decode_event, encode_event
from processors.failures import DATABASE_ERRORS, is_retriable
from processors.faust_health import WorkerProbe
from processors.listener import listen
from processors.metrics import ProcessorMetrics
from processors.offsets import find_gap, start_offset
from processors.quarantine import Batch, isolate, set_aside
from processors.settings import ProcessorSettings
from processors.state import PatientState

__all__ = ["EXIT_STALLED", "app", "readings", "states"]

logger = logging.getLogger(__name__)

settings = ProcessorSettings()
config = settings.engine()
# The worker exits with this code when it must be restarted (stalled, or records skipped): run it under a supervisor.
EXIT_STALLED = 70

app = faust.App(
    settings.processor_app_id,
    # Faust separates brokers with ';', Kafka clients with ','.
    broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
    datadir=str(settings.faust_datadir),
    store="memory://",
    processing_guarantee="at_least_once",
    web_enabled=False,
    topic_replication_factor=1,
    topic_partitions=settings.processor_topic_partitions,
    # Events produced before the group's first assignment are still to be judged.
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.processor_session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.processor_session_timeout_s / 3),
)
readings = app.topic(
    settings.processor_topic,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.processor_topic_partitions,
)
# patient id (UTF-8) -> processors.codec JSON of the patient's engine state.
states = app.Table(
    "patient-states",
    partitions=settings.processor_topic_partitions,
    key_type=bytes,
    value_type=bytes,
)


class _Runtime:
    """The worker's database pool and context cache, created in the worker's event loop on first use."""

    def __init__(self) -> None:
        self.contexts = ContextCache(ttl=settings.processor_context_ttl_s)
        self.stop = asyncio.Event()
        # Set while a batch waits for the database (the partitions are held on purpose, not stalled).
        self.retrying = False
        # partition -> (committed offset, monotonic time it was first seen at that offset)
        self.commits: dict[int, tuple[int, float]] = {}
        # partition -> the offset the next record must have (set from the group's commit after each assignment)
        self.next_offsets: dict[int, int] = {}
        # patient -> (the table value this worker wrote last, its decoded state): skips decoding it again.
        self.decoded: dict[UUID, tuple[bytes, PatientState]] = {}
        self._pool: Any = None
        self._admin: Any = None
        self._lock = asyncio.Lock()

    async def pool(self) -> Any:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    settings.database_url(), min_size=settings.pool_min_size, max_size=settings.pool_max_size
                )
            return self._pool

    async def admin(self) -> Any:
        async with self._lock:
            if self._admin is None:
                self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
                await self._admin.start()
            return self._admin

    async def close(self) -> None:
        self.stop.set()
        if self._pool is not None:
            await self._pool.close()
        if self._admin is not None:
            await self._admin.close()


runtime = _Runtime()
metrics = ProcessorMetrics()
probe = WorkerProbe(app, runtime.pool, runtime.admin, metrics, settings)


@app.service
class _Closer(mode.Service):
    async def on_stop(self) -> None:
        await runtime.close()


@app.task  # type: ignore[untyped-decorator]  # faust is untyped
async def listen_for_changes() -> None:
    """Requirement and context edits reach the cache without a restart."""
    await listen(await runtime.pool(), runtime.contexts, runtime.stop, probe.listening)


@app.task  # type: ignore[untyped-decorator]  # faust is untyped
async def serve_metrics() -> None:
    """/metrics, /healthz, /readyz on PROCESSOR_FAUST_METRICS_PORT (processors.faust_health)."""
    await probe.serve(runtime.stop)


@app.agent(readings)
async def evaluate(stream: Any) -> None:
    """The one agent: batches of events, judged per patient in partition order, acknowledged only once committed.

    `noack_take`, not `take`/`take_events`: those acknowledge the buffered batch in a `finally`, also when the
    batch's processing is interrupted, and an acknowledged event is never delivered again (seen here: a kill -9
    test lost notifications that way). A batch that does not complete stays unacknowledged: its partition's
    committed offset cannot pass it, the stall watchdog restarts the worker, and Kafka delivers it again.
    """
    async for events in stream.noack_take(settings.processor_batch_max, within=settings.processor_batch_within_s):
        await handle(events)
        for event in events:
            await stream.ack(event)


def _key(patient_id: UUID) -> bytes:
    return str(patient_id).encode()


def _decode(events: Sequence[Any]) -> tuple[dict[UUID, list[Event]], dict[UUID, int]]:
    by_patient: dict[UUID, list[Event]] = {}
    partitions: dict[UUID, int] = {}
    for event in events:
        message = event.message
        try:
            patient_id = UUID(bytes(event.key).decode())
            decoded = decode_event(bytes(event.value))
        except (BadEventError, ValueError, TypeError) as exc:
            logger.warning("skipping a bad record at %s[%d]@%d: %s", message.topic, message.partition,
                           message.offset, exc)  # fmt: skip
            continue
        if isinstance(decoded, CommittedReading) and decoded.patient_id != patient_id:
            logger.warning("skipping a record keyed by another patient at %s[%d]@%d", message.topic,
                           message.partition, message.offset)  # fmt: skip
            continue
        by_patient.setdefault(patient_id, []).append(decoded)
        partitions[patient_id] = message.partition
    return by_patient, partitions


@app.on_partitions_assigned.connect
async def _forget_offsets(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """A new assignment: each partition's expected offset is read again from the group's commit."""
    runtime.next_offsets.clear()


async def _start_offset(partition: int) -> int:
    """Where processing of `partition` must go on after an assignment (`processors.offsets.start_offset`)."""
    tp = TopicPartition(settings.processor_topic, partition)
    offsets = await (await runtime.admin()).list_consumer_group_offsets(settings.processor_app_id, partitions=[tp])
    meta = offsets.get(tp)
    source = TP(settings.processor_topic, partition)
    earliest = (await app.consumer.earliest_offsets(source)).get(source)
    return start_offset(None if meta is None else int(meta.offset), int(earliest or 0))


async def check_contiguous(events: Sequence[Any]) -> None:
    """Exits the worker (EXIT_STALLED: its supervisor restarts it) if the batch skips records of a partition.

    Faust has been seen, after a restart, to drop buffered records while its fetch position moves on (the gap
    faust-streaming PR 217 describes). It never commits past such a gap once the group has committed on the
    partition, so the records come again after a restart; but on a partition the group never committed on (a
    worker killed within its first commit interval) it does, and the records would be lost. Either way, judging a
    patient's later readings before its earlier ones would change the outcome (they would count as late data). So
    nothing of such a batch is processed: a restart re-reads the partition from its committed offset, or from its
    first record if there is none.
    """
    records = [(event.message.partition, event.message.offset) for event in events]
    for partition in {p for p, _ in records} - runtime.next_offsets.keys():
        runtime.next_offsets[partition] = await _start_offset(partition)
    gap = find_gap(records, runtime.next_offsets)
    if gap is not None:
        logger.error(
            "records %d..%d of partition %d were skipped by the consumer; exiting for a restart",
            gap.first, gap.received - 1, gap.partition,
        )  # fmt: skip
        sys.stderr.flush()
        os._exit(EXIT_STALLED)


async def _run(cached: dict[UUID, PatientState | None], batch: Batch) -> BatchResult:
    pool = await runtime.pool()
    async with pool.acquire() as conn:
        return await run_batch(conn, batch, {p: cached[p] for p in batch}, runtime.contexts, config)


async def _set_aside(aside: set[UUID], patient_id: UUID, events: Sequence[Event], exc: BaseException) -> None:
    try:
        async with (await runtime.pool()).acquire() as conn:
            await set_aside(conn, patient_id, events, exc)
    except DATABASE_ERRORS as store_exc:  # never dropped: the batch is retried
        raise StoreError(f"events of patient {patient_id} not set aside: {store_exc!r}") from store_exc
    aside.add(patient_id)
    metrics.count_quarantined(events)


async def handle(events: Sequence[Any]) -> None:
    """Evaluates one batch; retries (blocking the batch, never skipping it) while the failure is retriable. A
    patient whose events fail for a reason retrying cannot fix is set aside in quarantine and the rest commits
    (`processors.quarantine.isolate`), so the batch is acknowledged either way."""
    started = time.monotonic()
    metrics.records_consumed.inc(len(events))
    await check_contiguous(events)
    by_patient, partitions = _decode(events)
    if not by_patient:
        return
    cached: dict[UUID, PatientState | None] = dict.fromkeys(by_patient)
    for patient_id in by_patient:
        raw = states.data.get(_key(patient_id))
        if raw is None:
            continue
        known = runtime.decoded.get(patient_id)
        if known is not None and known[0] is raw:
            cached[patient_id] = known[1]  # the table holds what this worker wrote last: no need to decode it
            continue
        try:
            cached[patient_id] = load_state(raw)
        except StateError as exc:
            logger.warning("cached state of patient %s is unreadable: %s", patient_id, exc)
    delay = 0.2
    while True:
        try:
            aside: set[UUID] = set()
            results = await isolate(by_patient, partial(_run, cached), partial(_set_aside, aside))
            runtime.retrying = False
            committed = [e for p, e in by_patient.items() if p not in aside]
            metrics.batch_committed(committed, [o for r in results for o in r.outputs], time.monotonic() - started)
            break
        except Exception as exc:
            if not is_retriable(exc):
                raise
            metrics.errors.labels("batch").inc()
            runtime.retrying = True
            logger.warning("batch of %d events not processed (%r); retrying in %.1f s", len(events), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    # Only now, after the commit: the changelog must never be ahead of the database.
    for result in results:
        for patient_id, state in result.states.items():
            key, value = _key(patient_id), result.encoded[patient_id]
            states.send_changelog(partitions[patient_id], key, value)
            states.data[key] = value
            runtime.decoded[patient_id] = (value, state)


def utc_now() -> datetime:
    return datetime.now(UTC)


if settings.processor_tick_interval_s > 0:

    @app.timer(interval=settings.processor_tick_interval_s, on_leader=True)  # type: ignore[untyped-decorator]
    async def tick_monitored_patients() -> None:
        """One tick per monitored patient, on the patient's partition, so it is judged in order with readings."""
        now = utc_now()
        pool = await runtime.pool()
        async with pool.acquire() as conn:
            patients = await monitored_patients(conn)
        value = encode_event(Tick(now))
        for patient_id in patients:
            await readings.send(key=_key(patient_id), value=value)
        logger.debug("ticked %d patients", len(patients))


if settings.processor_stall_timeout_s > 0:

    @app.timer(interval=min(5.0, settings.processor_stall_timeout_s / 3))  # type: ignore[untyped-decorator]
    async def watch_for_stalls() -> None:
        """Faust consumers have been seen to stop taking records with no error (faust-streaming issues 175 and
        640; here, rarely, after a restart). A source partition with unprocessed records whose committed offset
        has not moved for `processor_stall_timeout_s` (not rebalancing, not waiting for the database) makes the
        worker exit with EXIT_STALLED: its supervisor restarts it, and at-least-once delivery with idempotent,
        versioned outputs makes the restart safe."""
        now = time.monotonic()
        tps = [tp for tp in app.consumer.assignment() if tp.topic == settings.processor_topic]
        if not tps or app.rebalancing or runtime.retrying:
            runtime.commits.clear()
            return
        ends = await app.consumer.highwaters(*tps)
        # A partition nobody committed on yet starts at its earliest offset (0 unless retention trimmed it).
        starts = await app.consumer.earliest_offsets(*tps)
        offsets = await (await runtime.admin()).list_consumer_group_offsets(
            settings.processor_app_id, partitions=[TopicPartition(tp.topic, tp.partition) for tp in tps]
        )
        stalled = []
        for tp in tps:
            meta = offsets.get(TopicPartition(tp.topic, tp.partition))
            committed = max(-1 if meta is None else meta.offset, starts.get(tp) or 0)
            end = ends.get(tp)
            seen = runtime.commits.get(tp.partition)
            if end is None or committed >= end or seen is None or seen[0] != committed:
                runtime.commits[tp.partition] = (committed, now)
            elif now - seen[1] > settings.processor_stall_timeout_s:
                stalled.append((tp.partition, committed, end))
        if stalled:
            logger.error(
                "stalled: (partition, committed, end) %s unchanged for %.0f s; exiting for a restart",
                stalled, settings.processor_stall_timeout_s,
            )  # fmt: skip
            mode_logging.cry(file=sys.stderr)
            sys.stderr.flush()
            os._exit(EXIT_STALLED)
