"""Spike: a Faust (faust-streaming) agent consumes from and produces to the project's Kafka 4 broker.

Needs the broker from ``scripts/kafka.sh up``. The worker is a real subprocess running ``faust_echo_app.py``;
the test talks to Kafka with aiokafka only, so it proves the round trip, not Faust's view of it.
"""

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
APP_MODULE = Path(__file__).with_name("faust_echo_app.py")
RECORDS = 60
DEVICES = 6
PARTITIONS = 2
# Bounds each client start and each request batch.
REQUEST_TIMEOUT = 15.0
# Covers worker start-up (imports, group join, first assignment) plus the round trip of every record.
ROUND_TRIP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Topics:
    """The names one test run owns; every Kafka object it creates starts with ``run_id``."""

    run_id: str
    source: str
    sink: str


@dataclass(frozen=True, slots=True)
class Worker:
    """A Faust worker subprocess and the file its output goes to."""

    process: asyncio.subprocess.Process
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        """The end of the worker's output, for assertion messages."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> int:
        """SIGTERM the worker (Faust's graceful shutdown) and return its exit status once it has exited."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()


@pytest.fixture
async def topics() -> AsyncIterator[Topics]:
    """A fresh source/sink topic pair, deleted afterwards together with Faust's own topics for the run."""
    run_id = f"spike-faust-{uuid.uuid4().hex[:12]}"
    names = Topics(run_id=run_id, source=f"{run_id}-readings", sink=f"{run_id}-doubled")
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP_SERVERS)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await admin.start()
            await admin.create_topics(
                [NewTopic(name, PARTITIONS, replication_factor=1) for name in (names.source, names.sink)]
            )
        yield names
        async with asyncio.timeout(REQUEST_TIMEOUT):
            owned = [name for name in await admin.list_topics() if name.startswith(run_id)]
            await admin.delete_topics(owned)
    finally:
        await admin.close()


@pytest.fixture
async def worker(topics: Topics, tmp_path: Path) -> AsyncIterator[Worker]:
    """A running Faust worker for ``topics``; killed at teardown if the test did not stop it."""
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP_SERVERS,
        "SPIKE_APP_ID": topics.run_id,
        "SPIKE_SOURCE_TOPIC": topics.source,
        "SPIKE_SINK_TOPIC": topics.sink,
        "SPIKE_DATADIR": str(tmp_path / "faust-data"),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            # --without-web: the worker command turns the web server back on (port 6066) unless told not to,
            # whatever the app's web_enabled says.
            sys.executable, str(APP_MODULE), "worker", "--without-web", "--loglevel=info",
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    running = Worker(process=process, log=log)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def reading(seq: int) -> tuple[bytes, dict[str, Any]]:
    """The ``seq``-th source record: keyed by device, so records spread over the partitions."""
    return f"device-{seq % DEVICES}".encode(), {"seq": seq, "value": seq * 7}


async def produce(topic: str, records: list[tuple[bytes, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP_SERVERS, acks="all")
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await producer.start()
            acks = [await producer.send(topic, key=k, value=json.dumps(v).encode()) for k, v in records]
            await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def consume(topic: str, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    """Read ``count`` records from the start of ``topic`` (no consumer group); the caller bounds the wait."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP_SERVERS, auto_offset_reset="earliest", enable_auto_commit=False
    )
    received: list[tuple[bytes, dict[str, Any]]] = []
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await consumer.start()
        while len(received) < count:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                received.extend((message.key, json.loads(message.value)) for message in messages)
    finally:
        await consumer.stop()
    return received


async def test_agent_consumes_and_produces(topics: Topics, worker: Worker) -> None:
    sent = [reading(seq) for seq in range(RECORDS)]
    await produce(topics.source, sent)

    try:
        async with asyncio.timeout(ROUND_TRIP_TIMEOUT):
            received = await consume(topics.sink, RECORDS)
    except TimeoutError:
        pytest.fail(f"fewer than {RECORDS} records in {ROUND_TRIP_TIMEOUT}s\n{worker.log_tail()}")

    expected = [(key, {"seq": v["seq"], "doubled": 2 * v["value"], "by": "faust"}) for key, v in sent]
    assert sorted(received, key=lambda record: record[1]["seq"]) == expected
    # A key maps to one partition and Faust handles a partition in order: per device, the input order holds.
    for device in {key for key, _ in sent}:
        seqs = [value["seq"] for key, value in received if key == device]
        assert seqs == sorted(seqs), device

    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            returncode = await worker.stop()
    except TimeoutError:
        pytest.fail(f"worker still running {STOP_TIMEOUT}s after SIGTERM\n{worker.log_tail()}")
    assert returncode == 0, worker.log_tail()
