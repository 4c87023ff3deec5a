"""Inline mode: the processors' inline runner in this process, fed by the relay (only their public API is used:
`processors.inline.InlineProcessor` and `processors.settings.ProcessorSettings`)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from prometheus_client import CollectorRegistry

from ingest.backoff import Backoff
from ingest.service import Transport
from ingest.settings import IngestSettings
from ingest.sinks import InlineSink

logger = logging.getLogger(__name__)


async def transport(
    settings: IngestSettings, stop: asyncio.Event, registry: CollectorRegistry | None = None
) -> Transport | None:
    """The inline processors (their own pool, under the processor role) as the relay's sink; None if stopped
    before the database answered. Their metrics (alerts, notifications, quarantined events) go to `registry`."""
    from processors.inline import InlineProcessor
    from processors.metrics import ProcessorMetrics
    from processors.settings import ProcessorSettings

    config = ProcessorSettings()
    backoff = Backoff(settings.ingest_reconnect_initial_s, settings.ingest_reconnect_max_s)
    while True:
        try:
            pool = await asyncpg.create_pool(
                config.database_url(), min_size=config.pool_min_size, max_size=config.pool_max_size
            )
            break
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            delay = backoff.next_delay()
            logger.warning("processors' database pool not ready (%s); retrying in %.1fs", exc, delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                continue
            return None
    metrics = ProcessorMetrics(registry)
    processor = InlineProcessor(
        pool,
        config.engine(),
        tick_batch=config.processor_tick_batch,
        on_commit=metrics.count_outputs,
        on_quarantine=metrics.count_quarantined,
    )

    async def run(until: asyncio.Event) -> None:
        await processor.run(until, config.processor_tick_interval_s)

    return Transport(InlineSink(processor.deliver), tasks=[("processors", run)], cleanups=[pool.close])
