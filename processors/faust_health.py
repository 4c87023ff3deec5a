"""The Faust worker's readiness, consumer lag and HTTP server (/metrics, /healthz, /readyz).

Kept out of `processors.faust_app` so that module stays the hot path: the app wires a `WorkerProbe` in with one
task. The probe polls every `interval_s`: a `SELECT 1` through the worker's pool, the partitions of the readings
topic assigned to this worker, and their lag (high-water mark minus the group's committed offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from processors.health import HealthServer
from processors.metrics import ProcessorMetrics
from processors.settings import ProcessorSettings

__all__ = ["WorkerProbe"]

logger = logging.getLogger(__name__)

Monotonic = Callable[[], float]
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class WorkerProbe:
    """Ready when the consumer holds partitions of the readings topic, is not rebalancing, and the database
    answered a probe within max(30 s, 3 x `interval_s`)."""

    def __init__(
        self,
        app: Any,
        pool: Callable[[], Awaitable[Any]],
        admin: Callable[[], Awaitable[Any]],
        metrics: ProcessorMetrics,
        settings: ProcessorSettings,
        *,
        interval_s: float = 5.0,
        clock: Monotonic = time.monotonic,
    ) -> None:
        self._app = app
        self._pool = pool
        self._admin = admin
        self._metrics = metrics
        self._settings = settings
        self._interval = interval_s
        self._stale = max(30.0, 3 * interval_s)
        self._clock = clock
        self._db_at: float | None = None
        self._db_why = "no database probe yet"
        self._partitions = 0
        # Set by the change listener while it holds its connection.
        self.listening = asyncio.Event()
        metrics.listening.set_function(lambda: float(self.listening.is_set()))

    def __call__(self) -> tuple[bool, str]:
        if self._db_at is None or self._clock() - self._db_at > self._stale:
            return False, self._db_why
        if self._app.rebalancing:
            return False, "rebalancing"
        if self._partitions == 0:
            return False, f"no partition of {self._settings.processor_topic} assigned"
        return True, "ok"

    async def serve(self, stop: asyncio.Event) -> None:
        """Polls and serves HTTP until `stop`; a port already taken is logged and the worker goes on without it."""
        port = self._settings.processor_faust_metrics_port
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._poll_loop(stop), name="probe")
            if port >= 0:
                tg.create_task(self._serve_http(stop, port), name="http")

    async def _serve_http(self, stop: asyncio.Event, port: int) -> None:
        server = HealthServer(self._settings.processor_metrics_host, port, self._metrics.registry, self)
        try:
            await server.run(stop)
        except OSError as exc:
            logger.warning("metrics and health not served on port %d: %s", port, exc)

    async def _poll_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def poll(self) -> None:
        """One probe of the database and of the consumer's partitions and lag."""
        try:
            pool = await self._pool()
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1", timeout=self._interval)
            self._db_at = self._clock()
        except _ERRORS as exc:
            self._metrics.errors.labels("poll").inc()
            self._db_why = f"database unreachable: {type(exc).__name__}"
        topic = self._settings.processor_topic
        consumer = self._app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        self._partitions = len(tps)
        self._metrics.partitions_assigned.set(len(tps))
        if not tps:
            self._metrics.consumer_lag.set(0)
            return
        try:
            ends = await consumer.highwaters(*tps)
            starts = await consumer.earliest_offsets(*tps)
            offsets = await (await self._admin()).list_consumer_group_offsets(
                self._settings.processor_app_id, partitions=[TopicPartition(tp.topic, tp.partition) for tp in tps]
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            # The lag is left as it was; the next poll tries again.
            self._metrics.errors.labels("poll").inc()
            logger.debug("consumer lag not read: %r", exc)
            return
        lag = 0
        for tp in tps:
            meta = offsets.get(TopicPartition(tp.topic, tp.partition))
            committed = max(-1 if meta is None else meta.offset, starts.get(tp) or 0)
            end = ends.get(tp)
            if end is not None:
                lag += max(0, end - committed)
        self._metrics.consumer_lag.set(lag)
