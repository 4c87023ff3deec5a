"""The inline runner: ingest's relay hands it committed readings in-process; a clock loop feeds it ticks.

Each batch is one transaction: lock the batch's patients (advisory locks, so several processes may share the
work), load their contexts (cached) and stored engine states (or rebuild them from the database), evaluate, then
write outputs and the new states together. Raising from `deliver` means "not processed, deliver again"; since
the outputs and the state commit together and every write is idempotent, a retry changes nothing that was done.
It raises only when retrying can help (`processors.failures`): a patient whose events fail deterministically is
set aside in quarantine and the rest of the batch commits (`processors.quarantine.isolate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

import asyncpg

from processors.batch import run_batch
from processors.context import EngineConfig
from processors.contexts import ContextCache, monitored_patients
from processors.engine import Output
from processors.errors import BatchRefusedError, StoreError
from processors.events import CommittedReading, Event, Tick
from processors.failures import DATABASE_ERRORS, is_retriable
from processors.listener import listen
from processors.quarantine import isolate, set_aside
from processors.state import PatientState

__all__ = ["InlineProcessor", "ReadingLike"]

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


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
        state_cache: int = 10_000,
        on_commit: Callable[[Sequence[Output]], None] | None = None,
        on_quarantine: Callable[[Sequence[Event]], None] | None = None,
    ) -> None:
        self._pool = pool
        self._config = config
        self._contexts = contexts if contexts is not None else ContextCache(ttl=300)
        self._clock = clock
        self._tick_batch = tick_batch
        self._state_cache = state_cache
        # Told each committed batch's outputs (the clock's metrics count alerts and notifications).
        self._on_commit = on_commit
        # Told the events set aside in quarantine (the clock's metrics count them).
        self._on_quarantine = on_quarantine
        # The states this process committed last (most recently used last); checked against the table's version.
        self._states: OrderedDict[UUID, PatientState] = OrderedDict()
        self.listening = asyncio.Event()

    async def deliver(self, events: Sequence[ReadingLike]) -> None:
        """Evaluates committed readings (in order per patient) and commits their outputs; raises to be retried."""
        by_patient: dict[UUID, list[Event]] = {}
        for event in events:
            reading = as_reading(event)
            by_patient.setdefault(reading.patient_id, []).append(reading)
        if by_patient:
            await self.process(by_patient)

    async def tick(self, now: datetime | None = None, patients: Sequence[UUID] | None = None) -> int:
        """Feeds `Tick(now)` (default: the clock) to these patients (default: every monitored patient, in batches
        of `tick_batch`); returns how many were visited."""
        at = self._clock() if now is None else now
        if patients is None:
            try:
                async with self._pool.acquire() as conn:
                    patients = await monitored_patients(conn)
            except DATABASE_ERRORS as exc:
                raise StoreError(f"cannot list monitored patients: {exc!r}") from exc
        for start in range(0, len(patients), self._tick_batch):
            await self.process({p: [Tick(at)] for p in patients[start : start + self._tick_batch]})
        return len(patients)

    async def process(self, by_patient: Mapping[UUID, Sequence[Event]]) -> set[UUID]:
        """Evaluates and commits each patient's events (in order); returns the patients whose events failed for a
        reason retrying cannot fix and were set aside in `processor_quarantine` (the others committed).

        Raises `StoreError` when retrying can help (the database is unreachable, a serialization failure...)."""
        aside: set[UUID] = set()

        async def quarantine(patient_id: UUID, events: Sequence[Event], exc: BaseException) -> None:
            try:
                async with self._pool.acquire() as conn:
                    await set_aside(conn, patient_id, events, exc)
            except DATABASE_ERRORS as store_exc:  # never dropped: the batch is retried
                raise StoreError(f"events of patient {patient_id} not set aside: {store_exc!r}") from store_exc
            aside.add(patient_id)
            if self._on_quarantine is not None:
                self._on_quarantine(events)

        await isolate(by_patient, self._apply, quarantine)
        return aside

    async def _apply(self, by_patient: Mapping[UUID, Sequence[Event]]) -> list[Output]:
        cached = {p: self._states.get(p) for p in by_patient}
        try:
            async with self._pool.acquire() as conn:
                result = await run_batch(conn, by_patient, cached, self._contexts, self._config)
        except DATABASE_ERRORS as exc:
            if is_retriable(exc):
                raise StoreError(f"batch of {len(by_patient)} patients not processed: {exc!r}") from exc
            raise BatchRefusedError(f"batch of {len(by_patient)} patients refused: {exc!r}") from exc
        # Committed: remember what the table now holds, i.e. the new states over the ones the batch started from
        # (`current` alone would be one commit behind: every next batch would read the state's bytes back).
        for patient_id, state in {**result.current, **result.states}.items():
            self._states[patient_id] = state
            self._states.move_to_end(patient_id)
        while len(self._states) > self._state_cache:
            self._states.popitem(last=False)
        if self._on_commit is not None:
            self._on_commit(result.outputs)
        return result.outputs

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

    async def listen(self, stop: asyncio.Event) -> None:
        """LISTENs for requirement and context changes (see `processors.listener.listen`) until `stop`."""
        await listen(self._pool, self._contexts, stop, self.listening)
