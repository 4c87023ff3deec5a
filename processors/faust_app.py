"""The Faust runner (scale-out): consumes committed readings from Kafka, keyed by patient id.

    python -m processors faust worker --without-web

Configured from `ProcessorSettings` (environment / .env) when imported. One agent takes batches of events
(`stream.take_events`), groups them by patient (Kafka keeps each patient's events in order within its partition),
and runs the same batch step as the inline runner in one database transaction. The per-patient engine state
lives in a Faust table (`patient-states`, changelog-backed, co-partitioned with the readings topic); it is
written only after the database commit, so on any crash the changelog is never ahead of the database, and the
events that Kafka delivers again are either recognised (the state saw them) or evaluated again from an older
state to the very same idempotent outputs. Kafka transactions are not used: processing_guarantee=at_least_once.

Ticks travel on the same topic as `{"tick": ...}` records keyed by patient id: the leader worker's timer
produces one per monitored patient every `processor_tick_interval_s` (0: none; tests produce their own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import faust
import mode

from processors.batch import apply_batch
from processors.codec import dump_state, load_state
from processors.contexts import ContextCache, monitored_patients
from processors.errors import BadEventError, StateError, StoreError
from processors.events import CommittedReading, Event, Tick, decode_event, encode_event
from processors.listener import listen
from processors.settings import ProcessorSettings
from processors.state import PatientState

__all__ = ["app", "readings", "states"]

logger = logging.getLogger(__name__)

settings = ProcessorSettings()
config = settings.engine()
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, StoreError)

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
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def pool(self) -> Any:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    settings.database_url(), min_size=settings.pool_min_size, max_size=settings.pool_max_size
                )
            return self._pool

    async def close(self) -> None:
        self.stop.set()
        if self._pool is not None:
            await self._pool.close()


runtime = _Runtime()


@app.service
class _Closer(mode.Service):
    async def on_stop(self) -> None:
        await runtime.close()


@app.task  # type: ignore[untyped-decorator]  # faust is untyped
async def listen_for_changes() -> None:
    """Requirement and context edits reach the cache without a restart."""
    await listen(await runtime.pool(), runtime.contexts, runtime.stop)


@app.agent(readings)
async def evaluate(stream: Any) -> None:
    """The one agent: batches of events, judged per patient in partition order."""
    async for events in stream.take_events(settings.processor_batch_max, within=settings.processor_batch_within_s):
        await handle(events)


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


async def handle(events: Sequence[Any]) -> None:
    """Evaluates one batch; retries (blocking the batch, never skipping it) until the database takes it."""
    by_patient, partitions = _decode(events)
    if not by_patient:
        return
    stored: dict[UUID, PatientState] = {}
    for patient_id in by_patient:
        raw = states.data.get(_key(patient_id))
        if raw is None:
            continue
        try:
            stored[patient_id] = load_state(raw)
        except StateError as exc:
            logger.warning("state of patient %s is rebuilt from the database: %s", patient_id, exc)
    delay = 0.2
    while True:
        try:
            pool = await runtime.pool()
            async with pool.acquire() as conn, conn.transaction():
                result = await apply_batch(conn, by_patient, stored, runtime.contexts, config)
            break
        except _DATABASE_ERRORS as exc:
            logger.warning("batch of %d events not processed (%r); retrying in %.1f s", len(events), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    # Only now, after the commit: the changelog must never be ahead of the database.
    for patient_id, state in result.states.items():
        key, value = _key(patient_id), dump_state(state)
        states.send_changelog(partitions[patient_id], key, value)
        states.data[key] = value


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
