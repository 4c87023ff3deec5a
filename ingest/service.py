"""`python -m ingest serve`: the composition root. One TaskGroup: MQTT subscriber, batch collector, writers,
relay (live and recovery), status tracker, partition upkeep, the HTTP server and, inline, the processors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from ingest.backoff import Backoff
from ingest.clock import Clock, utc_now
from ingest.database import connect, ensure_partitions, load_units
from ingest.errors import IngestError
from ingest.identity import RecentIdentities
from ingest.metrics import Metrics
from ingest.pipeline import Lifecycle, Pipeline
from ingest.relay import Relay, Sink
from ingest.settings import IngestSettings
from ingest.sinks import DiscardSink, KafkaSink
from ingest.status import StatusTracker
from ingest.subscriber import Subscriber
from ingest.units import UnitRegistry
from ingest.writer import Writer
from processors.health import HealthServer

logger = logging.getLogger(__name__)

_UNITS_RELOAD_S = 300.0


@dataclass
class Transport:
    """The processors' side of the hand-off: a sink, plus tasks and cleanups that come with it."""

    sink: Sink | None
    tasks: list[tuple[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]]] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


async def serve(
    settings: IngestSettings,
    *,
    clock: Clock = utc_now,
    transport: Transport | None = None,
    lifecycle: Lifecycle | None = None,
    handle_signals: bool = True,
) -> None:
    """Runs the ingest service until SIGTERM/SIGINT (or `lifecycle.request_stop()`), then shuts down within the
    grace period: stop taking messages, flush, acknowledge, hand off, close."""
    life = lifecycle or Lifecycle(settings.ingest_shutdown_grace_s)
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, life.request_stop)
    metrics = Metrics()
    units = await _bootstrap(settings, life)
    if units is None:
        return
    transport = transport if transport is not None else await build_transport(settings, life.stop, metrics.registry)
    if transport is None:
        return
    destination = settings.outbox_destination if transport.sink is not None else None
    writer = Writer(units, settings.limits, RecentIdentities(settings.ingest_recent_identities), destination)
    relay = None
    if transport.sink is not None and destination is not None:
        relay = Relay(settings, transport.sink, destination, lambda: writer.units, metrics)
    pipeline = Pipeline(settings, writer, relay, metrics, life)
    status = StatusTracker(settings, metrics, life) if settings.ingest_mqtt_status_filters else None
    subscriber = Subscriber(settings, pipeline, status, metrics, life, clock)

    def ready() -> tuple[bool, str]:
        if life.stop.is_set():
            return False, "stopping"
        if not subscriber.connected:
            return False, "not connected to the broker"
        if not pipeline.database_ok:
            return False, "database unavailable"
        return True, "ready"

    health = HealthServer(settings.ingest_metrics_host, settings.ingest_metrics_port, metrics.registry, ready)
    finished = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(subscriber.run(), name="mqtt"),
                tg.create_task(_drain(pipeline, settings.ingest_writers, life), name="pipeline"),
                tg.create_task(_maintain(settings, writer, life, metrics), name="maintenance"),
            ]
            if relay is not None:
                tasks.append(tg.create_task(relay.run_live(life.drained, life.deadline), name="relay"))
                tasks.append(tg.create_task(relay.run_recovery(life.stop), name="outbox-scan"))
            if status is not None:
                tasks.append(tg.create_task(status.run(), name="status"))
            for name, run in transport.tasks:
                tasks.append(tg.create_task(run(life.stop), name=name))
            if settings.ingest_metrics_port >= 0:
                tg.create_task(health.run(finished), name="http")
            tg.create_task(_watchdog(life, tasks, pipeline), name="watchdog")
            await asyncio.gather(*tasks, return_exceptions=True)
            finished.set()
    finally:
        if relay is not None:
            await relay.close()
        for cleanup in transport.cleanups:
            with contextlib.suppress(Exception):
                await cleanup()
    logger.info("ingest stopped")


async def _bootstrap(settings: IngestSettings, life: Lifecycle) -> UnitRegistry | None:
    """Loads the unit registry and creates partitions, waiting (with backoff) for the database to be reachable."""
    backoff = Backoff(settings.ingest_reconnect_initial_s, settings.ingest_reconnect_max_s)
    while not life.stop.is_set():
        try:
            conn = await connect(settings)
            try:
                await ensure_partitions(conn)
                return await load_units(conn)
            finally:
                await conn.close()
        except IngestError as exc:
            if not exc.retriable:
                raise
            delay = backoff.next_delay()
            logger.warning("database not reachable at start (%s); retrying in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(life.stop.wait(), delay)
    return None


async def _drain(pipeline: Pipeline, writers: int, life: Lifecycle) -> None:
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(pipeline.run_collector(), name="collector")
            for i in range(writers):
                tg.create_task(pipeline.run_writer(), name=f"writer-{i}")
    finally:
        life.drained.set()


async def _maintain(settings: IngestSettings, writer: Writer, life: Lifecycle, metrics: Metrics) -> None:
    """Hourly partition upkeep; the unit registry is reloaded every few minutes."""
    loop = asyncio.get_running_loop()
    next_partitions = loop.time() + settings.ingest_partition_interval_s
    while not life.stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(life.stop.wait(), min(_UNITS_RELOAD_S, settings.ingest_partition_interval_s))
        if life.stop.is_set():
            return
        try:
            conn = await connect(settings)
            try:
                if loop.time() >= next_partitions:
                    metrics.partitions_created.inc(await ensure_partitions(conn))
                    next_partitions = loop.time() + settings.ingest_partition_interval_s
                writer.units = await load_units(conn)
            finally:
                await conn.close()
        except IngestError as exc:
            logger.warning("maintenance skipped: %s", exc)


async def _watchdog(life: Lifecycle, tasks: list[asyncio.Task[None]], pipeline: Pipeline) -> None:
    """Bounds shutdown: past the grace period, whatever still runs is cancelled (unacknowledged work is
    redelivered by the broker; committed work is in the outbox)."""
    await life.stop.wait()
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    deadline = life.deadline()
    remaining = max(0.0, (deadline or 0.0) - asyncio.get_running_loop().time()) + 0.5
    _, still = await asyncio.wait(pending, timeout=remaining)
    if still:
        logger.warning("grace period over; cancelling %s", ", ".join(sorted(t.get_name() for t in still)))
        pipeline.abandon()
        for task in still:
            task.cancel()


async def build_transport(
    settings: IngestSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None
) -> Transport | None:
    """The sink named by PROCESSOR_TRANSPORT (None: stopped while waiting for it); inline processors export their
    metrics into `registry` (ingest's)."""
    if settings.processor_transport == "none":
        return Transport(None)
    if settings.processor_transport == "discard":
        return Transport(DiscardSink())
    if settings.processor_transport == "kafka":
        sink = KafkaSink(settings.kafka_bootstrap_servers, settings.kafka_readings_topic)
        return Transport(sink, cleanups=[sink.stop])
    from ingest import inline

    return await inline.transport(settings, stop, registry)
