"""The inline runner: ingest's relay hands it committed readings in-process; a clock loop feeds it ticks.

Each batch is one transaction: lock the batch's patients (advisory locks, so several processes may share the
work), load their contexts (cached) and stored engine states (or rebuild them from the database), evaluate, then
write outputs and the new states together. Raising from `deliver` means "not processed, deliver again"; since
the outputs and the state commit together and every write is idempotent, a retry changes nothing that was done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from processors.context import EngineConfig
from processors.contexts import ContextCache, monitored_patients
from processors.engine import Output, evaluate, event_time
from processors.errors import StoreError
from processors.events import CommittedReading, Event, Tick
from processors.state import PatientState
from processors.store import (
    bootstrap_state,
    load_states,
    lock_patients,
    reconcile,
    save_states,
    write_outputs,
)

__all__ = ["CHANNELS", "InlineProcessor", "ReadingLike"]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Channels the database notifies on when a requirement version or a patient's context changes.
CHANNELS = ("vital_requirements", "processor_context")
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class ReadingLike(Protocol):
    """A committed reading as any producer spells it (processors.events.CommittedReading, ingest's event)."""

    @property
    def reading_id(self) -> UUID: ...
    @property
    def organization_id(self) -> UUID: ...
    @property
    def patient_id(self) -> UUID: ...
    @property
    def device_id(self) -> UUID: ...
    @property
    def vital_type(self) -> str: ...
    @property
    def vital_type_id(self) -> int: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def measured_at(self) -> datetime: ...
    @property
    def received_at(self) -> datetime: ...


def as_reading(event: ReadingLike) -> CommittedReading:
    if isinstance(event, CommittedReading):
        return event
    return CommittedReading(
        reading_id=event.reading_id,
        organization_id=event.organization_id,
        patient_id=event.patient_id,
        device_id=event.device_id,
        vital_type=event.vital_type,
        vital_type_id=event.vital_type_id,
        value=event.value,
        unit=event.unit,
        measured_at=event.measured_at,
        received_at=event.received_at,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


class InlineProcessor:
    """The processors in the ingest process (or any process with a pool under the processor role)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        config: EngineConfig,
        *,
        contexts: ContextCache | None = None,
        clock: Clock = utc_now,
        tick_batch: int = 200,
    ) -> None:
        self._pool = pool
        self._config = config
        self._contexts = contexts if contexts is not None else ContextCache(ttl=300)
        self._clock = clock
        self._tick_batch = tick_batch
        self.listening = asyncio.Event()

    async def deliver(self, events: Sequence[ReadingLike]) -> None:
        """Evaluates committed readings (in order per patient) and commits their outputs; raises to be retried."""
        by_patient: dict[UUID, list[Event]] = {}
        for event in events:
            reading = as_reading(event)
            by_patient.setdefault(reading.patient_id, []).append(reading)
        if by_patient:
            await self._apply(by_patient)

    async def tick(self, now: datetime | None = None, patients: Sequence[UUID] | None = None) -> int:
        """Feeds `Tick(now)` (default: the clock) to these patients (default: every monitored patient, in batches
        of `tick_batch`); returns how many were visited."""
        at = self._clock() if now is None else now
        if patients is None:
            try:
                async with self._pool.acquire() as conn:
                    patients = await monitored_patients(conn)
            except _DATABASE_ERRORS as exc:
                raise StoreError(f"cannot list monitored patients: {exc!r}") from exc
        for start in range(0, len(patients), self._tick_batch):
            await self._apply({p: [Tick(at)] for p in patients[start : start + self._tick_batch]})
        return len(patients)

    async def _apply(self, by_patient: Mapping[UUID, Sequence[Event]]) -> list[Output]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await self._apply_in(conn, by_patient)
        except _DATABASE_ERRORS as exc:
            raise StoreError(f"batch of {len(by_patient)} patients not processed: {exc!r}") from exc

    async def _apply_in(self, conn: Any, by_patient: Mapping[UUID, Sequence[Event]]) -> list[Output]:
        await lock_patients(conn, by_patient.keys())
        contexts = await self._contexts.get(conn, by_patient.keys())
        for patient_id in by_patient.keys() - contexts.keys():
            logger.debug("events for unknown or deleted patient %s skipped", patient_id)
        monitored = [p for p in by_patient if p in contexts and contexts[p].monitored]
        stored = await load_states(conn, monitored)
        current = await reconcile(conn, stored)
        outputs: list[Output] = []
        changed: list[PatientState] = []
        for patient_id in monitored:
            events = by_patient[patient_id]
            context = contexts[patient_id]
            before = stored.get(patient_id)
            state = current.get(patient_id)
            if state is None:
                state = await bootstrap_state(conn, context, event_time(events[0]), self._config)
            for event in events:
                result = evaluate(state, event, context, self._config)
                outputs.extend(result.outputs)
                state = result.state
            if state != before:
                changed.append(state)
        await write_outputs(conn, outputs)
        await save_states(conn, changed)
        return outputs

    # -- long-running tasks -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, tick_interval: float) -> None:
        """Listens for requirement/context changes and ticks every `tick_interval` seconds (0: no ticks) until
        `stop` is set."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.listen(stop), name="processors-listen")
            if tick_interval > 0:
                tasks.create_task(self._tick_loop(stop, tick_interval), name="processors-tick")

    async def _tick_loop(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            try:
                visited = await self.tick()
                logger.debug("tick: %d patients", visited)
            except StoreError as exc:
                logger.warning("tick failed, next one in %.0f s: %s", interval, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def listen(self, stop: asyncio.Event, *, keepalive: float = 10.0, backoff_cap: float = 30.0) -> None:
        """LISTENs on the change channels and drops the matching cached contexts; reconnects with backoff (and
        forgets every cached context, since notifications may have been missed meanwhile)."""
        failures = 0
        while not stop.is_set():
            try:
                async with self._pool.acquire() as conn:
                    for channel in CHANNELS:
                        await conn.add_listener(channel, self._on_notification)
                    self._contexts.invalidate()
                    self.listening.set()
                    failures = 0
                    try:
                        while not stop.is_set():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), keepalive)
                            await conn.execute("SELECT 1")
                    finally:
                        self.listening.clear()
                        for channel in CHANNELS:
                            with contextlib.suppress(*_DATABASE_ERRORS):
                                await conn.remove_listener(channel, self._on_notification)
            except _DATABASE_ERRORS as exc:
                failures += 1
                delay = min(backoff_cap, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
                logger.warning("listener lost (%r); reconnecting in %.1f s", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    def _on_notification(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        try:
            patient_id = UUID(json.loads(payload)["patient_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("unexpected notification on %s; dropping every cached context", channel)
            self._contexts.invalidate()
            return
        self._contexts.invalidate(patient_id)
