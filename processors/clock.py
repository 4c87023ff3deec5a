"""The processors' clock service (`python -m processors clock`), for the inline runner: ticks over the monitored
patients (missed checks, silent devices, quiet-time clears), the change listener, and the HTTP server
(/metrics, /healthz, /readyz), in one TaskGroup.

SIGTERM/SIGINT stop it promptly: a pass stops between batches, the batch in flight gets `processor_stop_grace_s`
to commit and is then cancelled (its transaction rolls back; ticks are idempotent, the next pass repeats the
work), and a database that does not answer within the same bound has its connections closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from uuid import UUID

import asyncpg

from processors.contexts import ContextCache, monitored_patients
from processors.errors import StoreError
from processors.failures import DATABASE_ERRORS
from processors.health import HealthServer
from processors.inline import InlineProcessor
from processors.metrics import ProcessorMetrics
from processors.settings import ProcessorSettings

__all__ = ["ClockReadiness", "Ticker", "serve"]

logger = logging.getLogger(__name__)

Monotonic = Callable[[], float]


def utc_now() -> datetime:
    return datetime.now(UTC)


class ClockReadiness:
    """Ready while the listener holds its connection (the database answers) and, with ticks on, while passes make
    progress: a batch or a pass completed within max(60 s, 3 x the tick interval)."""

    def __init__(self, listening: asyncio.Event, tick_interval_s: float, clock: Monotonic = time.monotonic) -> None:
        self._listening = listening
        self._ticking = tick_interval_s > 0
        self._stale = max(60.0, 3 * tick_interval_s)
        self._clock = clock
        self._progress_at: float | None = None
        self._why = "no tick yet"

    def progress(self) -> None:
        self._progress_at = self._clock()
        self._why = "ok"

    def failed(self, why: str) -> None:
        self._why = why

    def __call__(self) -> tuple[bool, str]:
        if not self._listening.is_set():
            return False, "not listening for changes (database unreachable?)"
        if not self._ticking:
            return True, "ok"
        if self._progress_at is None:
            return False, self._why
        idle = self._clock() - self._progress_at
        if idle > self._stale:
            return False, f"no tick progress for {idle:.0f} s ({self._why})"
        return True, "ok"


class Ticker:
    """Feeds `Tick(now)` to the monitored patients (of `organizations`, if any) every `interval_s`, one batch of
    `batch` patients per transaction, checking for the stop between batches."""

    def __init__(
        self,
        processor: InlineProcessor,
        pool: asyncpg.Pool,
        metrics: ProcessorMetrics,
        readiness: ClockReadiness,
        *,
        interval_s: float,
        batch: int,
        organizations: Collection[UUID] = (),
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._processor = processor
        self._pool = pool
        self._metrics = metrics
        self._readiness = readiness
        self._interval = interval_s
        self._batch = batch
        self._organizations = sorted(organizations)
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        """Passes until `stop` is set."""
        while not stop.is_set():
            await self.run_once(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def run_once(self, stop: asyncio.Event | None = None) -> bool:
        """One pass; False when it failed (logged and counted) or was interrupted by `stop`."""
        started = time.monotonic()
        at = self._clock()
        try:
            patients = await self._patients()
            for start in range(0, len(patients), self._batch):
                if stop is not None and stop.is_set():
                    return False
                chunk = patients[start : start + self._batch]
                await self._processor.tick(at, chunk)
                self._metrics.tick_patients.inc(len(chunk))
                self._metrics.events.labels("tick").inc(len(chunk))
                self._readiness.progress()
        except StoreError as exc:
            self._metrics.errors.labels("tick").inc()
            self._readiness.failed(f"last tick failed: {type(exc.__cause__ or exc).__name__}")
            logger.warning("tick failed, next one in %.0f s: %s", self._interval, exc)
            return False
        self._metrics.ticks.inc()
        self._metrics.tick_duration.observe(time.monotonic() - started)
        self._metrics.last_tick.set(time.time())
        self._readiness.progress()
        logger.debug("tick: %d patients", len(patients))
        return True

    async def _patients(self) -> Sequence[UUID]:
        try:
            async with self._pool.acquire() as conn:
                patients = await monitored_patients(conn)
                if not self._organizations:
                    return patients
                rows = await conn.fetch(
                    "SELECT id FROM patients WHERE id = ANY($1::uuid[]) AND organization_id = ANY($2::uuid[])"
                    " ORDER BY id",
                    patients,
                    self._organizations,
                )
                return [r["id"] for r in rows]
        except DATABASE_ERRORS as exc:
            raise StoreError(f"cannot list monitored patients: {exc!r}") from exc


async def _bound_shutdown(
    stop: asyncio.Event, tasks: Collection[asyncio.Task[None]], pool: asyncpg.Pool, grace: float
) -> None:
    """After `stop`: the tasks get `grace` seconds to finish, are then cancelled, and if they still hang (a database
    that does not answer the cancellation either) the pool's connections are closed under them."""
    await stop.wait()
    _, pending = await asyncio.wait(tasks, timeout=grace)
    if not pending:
        return
    logger.warning("%s still busy %.1f s after the stop: cancelling", sorted(t.get_name() for t in pending), grace)
    for task in pending:
        task.cancel()
    _, pending = await asyncio.wait(pending, timeout=grace)
    if pending:
        logger.warning("the database does not answer: closing its connections")
        pool.terminate()


async def serve(
    settings: ProcessorSettings,
    *,
    stop: asyncio.Event | None = None,
    metrics: ProcessorMetrics | None = None,
    health: list[HealthServer] | None = None,
    handle_signals: bool = True,
) -> None:
    """Runs the clock until SIGTERM/SIGINT or `stop`; `health`, when given, receives the HTTP server."""
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    metrics = metrics or ProcessorMetrics()
    grace = settings.processor_stop_grace_s
    pool = await asyncpg.create_pool(
        settings.database_url(), min_size=settings.pool_min_size, max_size=settings.pool_max_size
    )
    try:
        processor = InlineProcessor(
            pool,
            settings.engine(),
            contexts=ContextCache(ttl=settings.processor_context_ttl_s),
            tick_batch=settings.processor_tick_batch,
            on_commit=metrics.count_outputs,
            on_quarantine=metrics.count_quarantined,
        )
        metrics.listening.set_function(lambda: float(processor.listening.is_set()))
        interval = settings.processor_tick_interval_s
        readiness = ClockReadiness(processor.listening, interval)
        server = HealthServer(
            settings.processor_metrics_host, settings.processor_clock_metrics_port, metrics.registry, readiness
        )
        if health is not None:
            health.append(server)
        async with asyncio.TaskGroup() as tg:
            work = [tg.create_task(processor.listen(stop), name="listen")]
            if interval > 0:
                ticker = Ticker(
                    processor,
                    pool,
                    metrics,
                    readiness,
                    interval_s=interval,
                    batch=settings.processor_tick_batch,
                    organizations=settings.processor_tick_organizations,
                )
                work.append(tg.create_task(ticker.run(stop), name="tick"))
            if settings.processor_clock_metrics_port >= 0:
                tg.create_task(server.run(stop), name="http")
            tg.create_task(_bound_shutdown(stop, work, pool, grace), name="shutdown")
    finally:
        try:
            await asyncio.wait_for(pool.close(), grace)
        except TimeoutError:
            logger.warning("pool not closed within %.1f s: terminating its connections", grace)
            pool.terminate()
    logger.info("clock stopped")
