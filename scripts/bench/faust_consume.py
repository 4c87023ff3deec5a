"""Benchmark only: a Faust app that consumes the readings topic the way processors.faust_app does (`noack_take` of
the same size and window, key and value decoded with the processors' codec, every event acknowledged) and does
nothing else: no evaluation, no database, no table. Its rate is what Faust itself costs.

    BENCH_TOPIC=... BENCH_APP_ID=... BENCH_DATADIR=... python -m faust -A scripts.bench.faust_consume worker

Started by scripts.bench.streams.faust_read(..., consume_only=True).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import faust

from processors.events import decode_event
from processors.settings import ProcessorSettings

settings = ProcessorSettings()

app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
    datadir=os.environ["BENCH_DATADIR"],
    store="memory://",
    processing_guarantee="at_least_once",
    web_enabled=False,
    topic_replication_factor=1,
    topic_partitions=settings.processor_topic_partitions,
    consumer_auto_offset_reset="earliest",
)
readings = app.topic(
    os.environ["BENCH_TOPIC"],
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.processor_topic_partitions,
)


@app.agent(readings)
async def consume(stream: Any) -> None:
    async for events in stream.noack_take(settings.processor_batch_max, within=settings.processor_batch_within_s):
        for event in events:
            uuid.UUID(bytes(event.key).decode())
            decode_event(bytes(event.value))
        for event in events:
            await stream.ack(event)
