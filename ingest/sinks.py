"""Sinks for committed readings: Kafka (topic keyed by patient id) and the inline processors in this process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from ingest.errors import SinkUnavailableError
from ingest.event import ReadingEvent

logger = logging.getLogger(__name__)


class KafkaSink:
    """Produces each event as JSON to `topic`, key = patient id; returns once the broker acknowledged all of them
    (acks=all, idempotent producer), so the relay deletes outbox rows only for delivered readings."""

    def __init__(self, bootstrap_servers: str, topic: str, *, timeout_s: float = 30.0) -> None:
        from aiokafka import AIOKafkaProducer

        self._topic = topic
        self._timeout_s = timeout_s
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id="rpm-ingest",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=256 * 1024,
            request_timeout_ms=int(timeout_s * 1000),
        )
        self._started = False

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._producer.start(), timeout=self._timeout_s)
        except Exception as exc:
            raise SinkUnavailableError(f"Kafka producer did not start: {exc}") from exc
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def deliver(self, events: Sequence[ReadingEvent]) -> None:
        if not self._started:
            await self.start()
        try:
            async with asyncio.timeout(self._timeout_s):
                pending = [await self._producer.send(self._topic, value=e.encode(), key=e.key) for e in events]
                await asyncio.gather(*pending)
        except Exception as exc:
            raise SinkUnavailableError(f"Kafka delivery failed: {exc}") from exc


class DiscardSink:
    """Accepts and drops events: the whole hand-off path without processors (for benchmarks)."""

    async def deliver(self, events: Sequence[ReadingEvent]) -> None:
        return None


class InlineSink:
    """Hands events to the processors' inline runner in this process (it reads the wire contract's fields)."""

    def __init__(self, deliver: Callable[[Sequence[ReadingEvent]], Awaitable[None]]) -> None:
        self._deliver = deliver

    async def deliver(self, events: Sequence[ReadingEvent]) -> None:
        try:
            await self._deliver(events)
        except Exception as exc:
            raise SinkUnavailableError(f"inline processors failed: {exc}") from exc
