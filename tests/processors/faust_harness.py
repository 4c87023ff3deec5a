"""A Faust processors worker as a real subprocess on a topic of its own, and Kafka helpers for the tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processors.events import CommittedReading, Event, encode_event
from processors.supervision import Supervision, Verdict
from tests.processors.scenario import ConfigSpec

BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
ROOT = Path(__file__).parents[2]
PARTITIONS = 4
REQUEST_TIMEOUT = 15.0


@dataclass
class FaustRun:
    """One test's topic, consumer group (the app id) and worker process; everything named after `run_id`."""

    run_id: str
    directory: Path
    settings: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    supervision: Supervision = field(default_factory=Supervision)

    @property
    def stall_restarts(self) -> int:
        return self.supervision.restarts

    @property
    def topic(self) -> str:
        return f"{self.run_id}-readings"

    @property
    def log(self) -> Path:
        return self.directory / "worker.log"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP_SERVERS,
            "PROCESSOR_APP_ID": self.run_id,
            "PROCESSOR_TOPIC": self.topic,
            "PROCESSOR_TOPIC_PARTITIONS": str(PARTITIONS),
            "PROCESSOR_TICK_INTERVAL_S": "0",
            "PROCESSOR_STALL_TIMEOUT_S": "15",
            "RPM_STATE_DIR": str(self.directory / "state"),
            "PYTHONUNBUFFERED": "1",
            **self.settings,
        }

    async def start(self) -> None:
        assert self.process is None or self.process.returncode is not None
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} =====\n".encode())
            out.flush()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "processors", "faust", "worker", "--without-web",
                f"--loglevel={os.environ.get('TEST_FAUST_LOGLEVEL', 'warn')}",
                cwd=ROOT, env=self.environment(), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no offset commit, no changelog flush."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM (Faust's graceful shutdown); returns the exit status."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await self.process.wait()

    async def dump_tasks(self) -> None:
        """Asks the worker (mode's SIGUSR1 handler) to write every asyncio task's traceback to its log."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGUSR1)
            await asyncio.sleep(2)

    async def supervise(self) -> None:
        """What a supervisor does: restarts a worker that exited on its stall watchdog; any other exit fails."""
        if self.process is not None and self.supervision.judge(self.process.returncode) is Verdict.RESTART:
            await self.start()
        self.assert_running()

    def assert_running(self) -> None:
        assert self.process is not None and self.process.returncode is None, f"worker exited\n{self.log_tail()}"

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def config_environment(config: ConfigSpec) -> dict[str, str]:
    """A scenario's engine configuration as the worker's settings."""
    return {
        "PROCESSOR_LATENESS_HORIZON_S": str(config.lateness_horizon.total_seconds()),
        "PROCESSOR_SILENT_AFTER_S": str(config.silent_after.total_seconds()),
        "PROCESSOR_SCHEDULE_AHEAD_S": str(config.schedule_ahead.total_seconds()),
        "PROCESSOR_LATE_LIMIT_S": str(config.late_limit.total_seconds()),
    }


async def create_topic(name: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP_SERVERS)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await admin.start()
            await admin.create_topics([NewTopic(name, partitions, replication_factor=1)])
    finally:
        await admin.close()


async def delete_topics(prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP_SERVERS)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await admin.start()
            owned = [name for name in await admin.list_topics() if name.startswith(prefix)]
            if owned:
                await admin.delete_topics(owned)
    finally:
        await admin.close()


@asynccontextmanager
async def topic_run(kind: str, directory: Path, settings: dict[str, str] | None = None) -> AsyncIterator[FaustRun]:
    """A run with its topic created (the worker not started); afterwards the worker is killed, the topics deleted."""
    run = FaustRun(new_run_id(kind), directory, settings or {})
    await create_topic(run.topic)
    try:
        yield run
    finally:
        await run.kill()
        await delete_topics(run.run_id)


def new_run_id(kind: str) -> str:
    return f"test-processors-{kind}-{uuid.uuid4().hex[:10]}"


def record(patient_key: str, event: Event) -> tuple[bytes, bytes]:
    if isinstance(event, CommittedReading):
        assert str(event.patient_id) == patient_key
    return patient_key.encode(), encode_event(event)


async def produce(topic: str, records: Iterable[tuple[bytes, bytes]]) -> None:
    """Sends in order (one key's records stay in order on its partition) and waits for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP_SERVERS, acks="all", linger_ms=5)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await producer.start()
        sent = [await producer.send(topic, key=key, value=value) for key, value in records]
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def progress(group: str, topic: str) -> dict[int, tuple[int | None, int]]:
    """Per partition of `topic`: the group's committed offset (None: none yet) and the end offset."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP_SERVERS)
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP_SERVERS)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await admin.start()
            await consumer.start()
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends: Mapping[TopicPartition, int] = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await consumer.stop()
        await admin.close()
    return {
        tp.partition: (None if committed.get(tp) is None else committed[tp].offset, end) for tp, end in ends.items()
    }


async def committed_everything(group: str, topic: str) -> bool:
    """Whether the consumer group has committed every partition of `topic` up to its end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP_SERVERS)
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP_SERVERS)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            await admin.start()
            await consumer.start()
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends: Mapping[TopicPartition, int] = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await consumer.stop()
        await admin.close()
    # A partition that never received a record has nothing to commit.
    return all(end == 0 or (committed.get(tp) is not None and committed[tp].offset >= end) for tp, end in ends.items())


async def wait_committed(run: FaustRun, within: float) -> None:
    """Waits until the worker has committed every record produced so far to its topic; on timeout, fails with the
    offsets, the worker's task dump and its log."""
    try:
        async with asyncio.timeout(within):
            while not await committed_everything(run.run_id, run.topic):
                await run.supervise()
                await asyncio.sleep(0.5)
    except TimeoutError:
        await fail_with_diagnostics(run, f"not everything committed within {within:.0f} s")


async def fail_with_diagnostics(run: FaustRun, what: str) -> None:
    offsets = await progress(run.run_id, run.topic)
    await run.dump_tasks()
    raise AssertionError(
        f"{what}; (committed, end) per partition {offsets}; watchdog restarts {run.stall_restarts}\n{run.log_tail(400)}"
    )
