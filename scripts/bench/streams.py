"""Kafka for the sandbox: the project's Kafka (KAFKA_BOOTSTRAP_SERVERS, loopback only), with topics and consumer
groups named after the sandbox's database, so a run shares nothing with tests or other runs and removes its
topics afterwards. Starts the Faust processors worker as a process, reads a topic with a bare aiokafka consumer,
and tracks a group's progress from its committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processors.events import decode_event
from processors.settings import ProcessorSettings
from processors.supervision import Supervision, Verdict
from scripts.bench.sandbox import ROOT, Sandbox

logger = logging.getLogger(__name__)


def loopback_bootstrap(servers: str) -> str:
    """The project's Kafka as configured (KAFKA_BOOTSTRAP_SERVERS), refused unless every server is on loopback."""
    for server in servers.split(","):
        host = server.strip().rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            raise RuntimeError(f"benchmarks use only a Kafka on loopback, not {server!r} (KAFKA_BOOTSTRAP_SERVERS)")
    return servers


# Was a fixed 127.0.0.1:19092: a stack on other ports (a second clone's .env) ran its Kafka stages against the
# developers' broker, or skipped them when that one was down.
BOOTSTRAP = loopback_bootstrap(ProcessorSettings().kafka_bootstrap_servers)
PARTITIONS = 4
_TIMEOUT_S = 20.0
LOGS = Path(os.environ.get("RPM_STATE_DIR", "/var/tmp/rpm-telemetry")) / "bench-logs"
"""Where the Faust workers' logs are kept after the run (the sandbox's own directory is removed with it)."""


class KafkaUnavailableError(Exception):
    retriable = True


@dataclass(frozen=True, slots=True)
class Stream:
    """One topic of committed readings and the Faust application (= consumer group) reading it."""

    topic: str
    app_id: str

    @property
    def ingest_env(self) -> dict[str, str]:
        """Ingest produces committed readings to this topic."""
        return {
            "PROCESSOR_TRANSPORT": "kafka",
            "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "KAFKA_READINGS_TOPIC": self.topic,
        }


def prefix(box: Sandbox) -> str:
    """Every topic and group of the sandbox starts with this."""
    return f"{box.database}-"


def new_stream(box: Sandbox, name: str) -> Stream:
    tag = f"{prefix(box)}{name}-{secrets.token_hex(2)}"
    return Stream(topic=f"{tag}-readings", app_id=f"{tag}-processors")


async def check() -> None:
    """Raises KafkaUnavailableError when the project's Kafka does not answer."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=5000)
    try:
        async with asyncio.timeout(10):
            await admin.start()
            await admin.list_topics()
    except Exception as exc:
        raise KafkaUnavailableError(f"Kafka on {BOOTSTRAP} does not answer: {exc!r}") from exc
    finally:
        await admin.close()


async def create_topic(topic: str, partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        async with asyncio.timeout(_TIMEOUT_S):
            await admin.start()
            await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()


async def delete_topics(box: Sandbox) -> list[str]:
    """Deletes every topic of the sandbox (readings and Faust's changelogs); returns their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        async with asyncio.timeout(_TIMEOUT_S):
            await admin.start()
            owned = [t for t in await admin.list_topics() if t.startswith(prefix(box))]
            if owned:
                await admin.delete_topics(owned)
    finally:
        await admin.close()
    return owned


class Progress:
    """A topic's end offsets and a group's committed offsets, summed over partitions (long-lived clients)."""

    def __init__(self, topic: str, group: str, partitions: int = PARTITIONS) -> None:
        self._group = group
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self._admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)

    async def __aenter__(self) -> Progress:
        async with asyncio.timeout(_TIMEOUT_S):
            await self._admin.start()
            await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def end(self) -> int:
        async with asyncio.timeout(_TIMEOUT_S):
            ends: Mapping[TopicPartition, int] = await self._consumer.end_offsets(self._partitions)
        return sum(ends.values())

    async def committed(self) -> int:
        async with asyncio.timeout(_TIMEOUT_S):
            offsets = await self._admin.list_consumer_group_offsets(self._group, partitions=self._partitions)
        return sum(max(o.offset, 0) for o in offsets.values())

    async def members(self) -> int:
        """How many members the group has once it is stable (0 while it is empty or rebalancing)."""
        async with asyncio.timeout(_TIMEOUT_S):
            responses = await self._admin.describe_consumer_groups([self._group])
        for response in responses:
            for group in response.groups:
                # (error_code, group_id, state, protocol_type, protocol, members, ...)
                if group[1] == self._group and group[2] == "Stable":
                    return len(group[5])
        return 0


def start_faust(
    box: Sandbox, stream: Stream, extra_env: Mapping[str, str] | None = None, *, consume_only: bool = False
) -> subprocess.Popen[bytes]:
    """`python -m processors faust worker` on the stream's topic, as its own consumer group, in the sandbox; with
    `consume_only`, scripts.bench.faust_consume instead (the same take, decode and acks; nothing else)."""
    env = {
        **box.env,
        "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "PROCESSOR_TOPIC": stream.topic,
        "PROCESSOR_APP_ID": stream.app_id,
        "PROCESSOR_TOPIC_PARTITIONS": str(PARTITIONS),
        "PYTHONUNBUFFERED": "1",
        "BENCH_TOPIC": stream.topic,
        "BENCH_APP_ID": stream.app_id,
        "BENCH_DATADIR": str(box.state_dir / "faust" / stream.app_id),
        **(extra_env or {}),
    }
    app = ["-m", "faust", "-A", "scripts.bench.faust_consume"] if consume_only else ["-m", "processors", "faust"]
    cmd = [sys.executable, *app, "worker", "--without-web", "--loglevel=warn"]
    with (box.state_dir / f"{stream.app_id}.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(worker: subprocess.Popen[bytes], progress: Progress, limit_s: float = 90.0) -> float:
    """Waits until the worker's group is stable with a member; returns the seconds it took."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if worker.poll() is not None:
            raise KafkaUnavailableError(f"the Faust worker exited at start ({worker.returncode})")
        if await progress.members() > 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.5)
    raise KafkaUnavailableError(f"the Faust worker's group was not stable within {limit_s:.0f} s")


async def stop_faust(worker: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(worker.wait, grace_s)
        except subprocess.TimeoutExpired:
            worker.kill()
            await asyncio.to_thread(worker.wait)


@dataclass(slots=True)
class Worker:
    """A stage's Faust worker under supervision, as in production: restarted when its stall/gap watchdog exits
    it (EXIT_STALLED), given up on at any other exit (processors.supervision's policy)."""

    box: Sandbox
    stream: Stream
    env: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = None
    supervision: Supervision = field(default_factory=Supervision)

    @property
    def log(self) -> Path:
        return self.box.state_dir / f"{self.stream.app_id}.log"

    @property
    def kept_log(self) -> Path:
        return LOGS / self.log.name

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.supervision.restarts + 1} =====\n".encode())
        self.process = start_faust(self.box, self.stream, self.env)
        return self.process

    def supervise(self) -> bool:
        """Polls the worker, restarting it after a watchdog exit; returns whether it is (again) running."""
        assert self.process is not None
        verdict = self.supervision.judge(self.process.poll())
        if verdict is Verdict.RESTART:
            logger.warning("Faust worker %s exited on its watchdog; restart %d", self.stream.app_id,
                           self.supervision.restarts)  # fmt: skip
            self.start()
        elif verdict is Verdict.DIED:
            logger.error("Faust worker %s exited %s; see %s", self.stream.app_id, self.supervision.exit_status,
                         self.kept_log)  # fmt: skip
        return verdict is not Verdict.DIED

    async def watch(self, interval_s: float = 0.5) -> None:
        while self.supervise():  # noqa: ASYNC110 - polls a subprocess
            await asyncio.sleep(interval_s)

    def summary(self) -> dict[str, Any]:
        """Restarts, the exit status that ended supervision (None: ran until stopped) and the kept log."""
        return {
            "restarts": self.supervision.restarts,
            "exit_status": self.supervision.exit_status,
            "log": str(self.kept_log),
        }


@contextlib.asynccontextmanager
async def supervised(box: Sandbox, stream: Stream, extra_env: Mapping[str, str]) -> AsyncIterator[Worker]:
    """Starts a Faust worker and supervises it until the block ends; then stops it (SIGTERM, not judged) and keeps
    its log in LOGS."""
    worker = Worker(box, stream, extra_env)
    worker.start()
    watcher = asyncio.create_task(worker.watch(), name=f"supervise {stream.app_id}")
    try:
        yield worker
    finally:
        watcher.cancel()
        await asyncio.wait([watcher])  # its cancellation is not ours to re-raise
        if worker.process is not None:
            await stop_faust(worker.process)
        LOGS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(worker.log, worker.kept_log)


async def bare_read(topic: str, records: int, group: str, *, decode: bool = False) -> dict[str, Any]:
    """Reads `records` records of `topic` from the beginning with a plain aiokafka consumer (a group of its own,
    default fetch settings): records/s from the first record to the last. With `decode`, each record is decoded
    as the Faust runner decodes it (key as a patient id, value with processors.events.decode_event), so the rate
    is that of consuming, not of copying bytes."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=BOOTSTRAP,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    async with asyncio.timeout(_TIMEOUT_S):
        await consumer.start()
    seen, first = 0, None
    started = time.perf_counter()
    try:
        while seen < records and time.perf_counter() - started < 300:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                if first is None and batch:
                    first = time.perf_counter()
                if decode:
                    for record in batch:
                        uuid.UUID(bytes(record.key).decode())
                        decode_event(bytes(record.value))
                seen += len(batch)
        done = time.perf_counter()
    finally:
        await consumer.stop()
    seconds = done - (first if first is not None else started)
    return {"records": seen, "seconds": round(seconds, 3), "records_per_s": seen / seconds if seconds > 0 else 0.0}


async def faust_read(
    box: Sandbox, stream: Stream, records: int, extra_env: Mapping[str, str], *, consume_only: bool = False
) -> dict[str, Any]:
    """Starts a Faust worker as a new group on a topic that already holds `records` records and measures how fast
    it commits its way to the end: records/s between its first committed offset and the last (the first commit's
    records are left out), and the wall time including start-up. The worker commits every 0.2 s here (Faust's
    default, 2.8 s, quantised a run of a few seconds so coarsely that it read as a third of the real rate)."""
    worker = start_faust(box, stream, {"BROKER_COMMIT_INTERVAL": "0.2", **extra_env}, consume_only=consume_only)
    try:
        async with Progress(stream.topic, stream.app_id) as progress:
            started = time.perf_counter()
            first: tuple[float, int] | None = None
            done = 0
            while time.perf_counter() - started < 600:
                if worker.poll() is not None:
                    raise KafkaUnavailableError(f"the Faust worker exited ({worker.returncode})")
                done = await progress.committed()
                now = time.perf_counter()
                if done > 0 and first is None:
                    first = (now, done)
                if done >= records:
                    break
                await asyncio.sleep(0.25)
            finished = time.perf_counter()
    finally:
        await stop_faust(worker)
    if first is None or done < records:
        return {"records": done, "complete": False}
    seconds = finished - first[0]
    return {
        "records": done,
        "complete": True,
        "seconds": round(seconds, 3),
        "records_per_s": (done - first[1]) / seconds if seconds > 0 else 0.0,
        "wall_seconds": round(finished - started, 3),
    }
