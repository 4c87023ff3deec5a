"""The pipeline under load: `python -m ingest serve` in the sandbox (one or more processes sharing the
subscription), fed by the load generator.

Measures sustained committed readings/s (1- and 10-reading messages, QoS 1, ack after commit), optionally until
the processors have taken every reading too, publish->commit latency percentiles at a fraction of that maximum (a
probe device whose readings are polled for by primary key every 5 ms), and RSS/CPU of each process. Skipped, with
the reason, while ingest has no `serve` command.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gmqtt
import psutil

from device_simulators.credentials import DeviceCredential
from device_simulators.message import Message, Reading, readings_topic
from device_simulators.publisher import Connection
from device_simulators.tally import percentile
from scripts.bench.backends import BackendCpu, backend_ticks
from scripts.bench.load import result, start_publisher
from scripts.bench.sandbox import ROOT, Sandbox


class PipelineUnavailableError(Exception):
    retriable = False


def ingest_command() -> list[str]:
    """The command that runs the ingest service, or PipelineUnavailableError saying why there is none."""
    probe = subprocess.run(
        [sys.executable, "-m", "ingest", "serve", "--help"], cwd=ROOT, capture_output=True, check=False
    )
    if probe.returncode != 0:
        raise PipelineUnavailableError("ingest has no `python -m ingest serve` command")
    return [sys.executable, "-m", "ingest", "--log-level", "WARNING", "serve"]


@dataclass(slots=True)
class Usage:
    """CPU seconds and peak RSS of a process (and its children), sampled while it runs."""

    name: str
    process: psutil.Process
    peak_rss: int = 0
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    def sample(self) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            times = self.process.cpu_times()
            self.cpu_end = times.user + times.system
        except psutil.Error:
            pass


@dataclass(slots=True)
class Watch:
    """The stage's processes (CPU and peak RSS each) and, with `database`, that database's PostgreSQL backends
    (CPU only: their RSS is mostly the server's shared buffers), rescanned at every sample so that backends
    opened during the stage count too."""

    usages: list[Usage] = field(default_factory=list)
    database: str | None = None
    backends: BackendCpu = field(default_factory=BackendCpu)

    def add(self, name: str, pid: int) -> None:
        try:
            process = psutil.Process(pid)
            times = process.cpu_times()
        except psutil.Error:
            return
        self.usages.append(Usage(name, process, cpu_start=times.user + times.system))

    def add_backends(self, database: str) -> None:
        self.database = database
        self.backends.start(backend_ticks(database))

    def sample(self) -> None:
        for usage in self.usages:
            usage.sample()
        if self.database is not None:
            self.backends.observe(backend_ticks(self.database))

    def report(self, seconds: float) -> dict[str, dict[str, float]]:
        usage = {
            u.name: {
                "cpu_percent": round(100 * (u.cpu_end - u.cpu_start) / seconds, 1),
                "peak_rss_mib": round(u.peak_rss / 2**20, 1),
            }
            for u in self.usages
        }
        if self.database is not None:
            usage[BACKENDS] = {"cpu_percent": self.backends.percent(seconds), "processes": self.backends.processes}
        return usage


BACKENDS = "postgres backends"
"""The usage entry of the sandbox database's backends (scripts.bench.backends)."""
WRITERS = "postgres writers (shared)"
"""The usage entry of the server's WAL writer, checkpointer and background writer: they work for every database
of the cluster at once, so this is an upper bound of the stage's share, not its share."""


async def writer_pids(box: Sandbox) -> list[int]:
    """The WAL writer, checkpointer and background writer of the sandbox's cluster (children of the postmaster
    that forked a backend of ours), not those of another cluster on the same machine."""
    conn = await box.connect(owner=True)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        postmaster = psutil.Process(backend).ppid()
    finally:
        await conn.close()
    writers = ("postgres: walwriter", "postgres: checkpointer", "postgres: background writer")
    pids = []
    for proc in psutil.process_iter(["ppid", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if proc.info["ppid"] == postmaster and title.startswith(writers):
            pids.append(proc.pid)
    return pids


INGEST_CLIENT_ID = "bench-ingest-1"


def ingest_client_id(index: int) -> str:
    """The MQTT client id of the `index`-th ingest process (from 1): unique per process, one share group."""
    return f"bench-ingest-{index}"


def start_ingest(
    box: Sandbox, extra_env: Mapping[str, str], client_id: str = INGEST_CLIENT_ID
) -> subprocess.Popen[bytes]:
    """Starts `python -m ingest serve` in the sandbox; stop it with `stop_ingest`."""
    env = {
        **box.env,
        "INGEST_METRICS_PORT": "0",
        "INGEST_MQTT_CLIENT_ID": client_id,
        "PROCESSOR_TRANSPORT": "none",
        **extra_env,
    }
    with (box.state_dir / f"{client_id}.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(ingest_command(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def stop_ingest(box: Sandbox, process: subprocess.Popen[bytes], client_id: str = INGEST_CLIENT_ID) -> None:
    """SIGTERM, then ends ingest's persistent broker session. A stale session stays a member of the shared
    subscription and Mosquitto keeps queueing its share of the messages, which the next stage would never see."""
    process.terminate()
    await asyncio.to_thread(process.wait, 60)
    client = gmqtt.Client(client_id, clean_session=True)
    client.set_auth_credentials(box.ingest.mqtt_ingest_user, box.ingest.mqtt_ingest_password.get_secret_value())
    await client.connect(box.broker.host, box.broker.port, version=gmqtt.constants.MQTTv50)
    await client.disconnect()


# What a stage leaves behind: readings, refusals, the hand-off, and everything the processors wrote.
_STAGE_TABLES = (
    "ingest_rejections",
    "ingest_outbox",
    "vital_alerts",
    "notifications",
    "symptoms",
    "processor_states",
    "scheduled_events",
    "adherence_records",
)


def truncate(box: Sandbox) -> None:
    """Empties what the previous stage wrote (the sandbox's registry, care plans and requirements stay)."""
    with box.admin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)",
                (list(_STAGE_TABLES),),
            ).fetchall()
        ]
        conn.execute("TRUNCATE " + ", ".join(["vital_readings", *tables]) + " CASCADE")


async def committed(box: Sandbox) -> int:
    conn = await box.connect(owner=True)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM vital_readings"))
    finally:
        await conn.close()


def _usage_summary(usage: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    writers = [v for k, v in usage.items() if k.startswith("postgres ") and k != BACKENDS]
    summary = {k: v for k, v in usage.items() if not k.startswith("postgres ") or k == BACKENDS}
    summary[WRITERS] = {"cpu_percent": round(sum(v["cpu_percent"] for v in writers), 1), "processes": len(writers)}
    return summary


Backlog = Callable[[], Awaitable[int]]
"""Readings committed but not yet taken by the processors (0 when there are none, or no processors)."""


async def sustained(
    box: Sandbox,
    credentials: Path,
    devices: int,
    readings: int,
    duration: float,
    extra_env: Mapping[str, str],
    rate: float = 0,
    *,
    processes: int = 1,
    messages: int | None = None,
    backlog: Backlog | None = None,
    watch_also: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Offers `rate` messages/s (0: as fast as the broker takes them) for `duration` s, or until `messages` were
    sent, to `processes` ingest processes sharing the subscription.

    Throughput is what was committed while the load ran; then the backlog drains, and every reading sent must be
    committed (`lost` counts those that never are, within 15 s of no progress). With `backlog`, the drain also
    waits for the processors to take every committed reading (`processed_seconds`, from the start of the load),
    allowing 60 s without progress (the outbox relay leaves a deferred batch for a 30 s lease).
    `watch_also` adds processes (name -> pid, e.g. a Faust worker) to the CPU/RSS report.
    """
    truncate(box)
    ingests = [
        (start_ingest(box, extra_env, ingest_client_id(i)), ingest_client_id(i)) for i in range(1, processes + 1)
    ]
    watch = Watch()
    try:
        await asyncio.sleep(3)
        for ingest, client_id in ingests:
            if ingest.poll() is not None:
                raise PipelineUnavailableError(f"ingest exited at start (see {box.state_dir / client_id}.log)")
            watch.add("ingest" if processes == 1 else client_id, ingest.pid)
        for name, pid in (watch_also or {}).items():
            watch.add(name, pid)
        out = box.state_dir / f"sustained-{readings}-{int(rate)}-{secrets.token_hex(2)}.json"
        publisher = start_publisher(
            box, credentials, out, devices=devices, duration=duration, readings=readings, rate=rate, messages=messages
        )
        watch.add("load generator", publisher.pid)
        watch.add_backends(box.database)
        for pid in await writer_pids(box):
            watch.add(f"postgres {pid}", pid)
        started = time.perf_counter()
        while publisher.poll() is None:
            watch.sample()
            await asyncio.sleep(0.5)
        loaded = time.perf_counter() - started
        during = await committed(box)
        usage = watch.report(loaded)
        sent = result(out)
        count, pending = during, await backlog() if backlog is not None else 0
        progress_at = committed_at = time.perf_counter()
        processed_at = progress_at if count >= sent["readings_sent"] and pending == 0 else None
        patience = 15 if backlog is None else 60
        while processed_at is None and time.perf_counter() - progress_at < patience:
            await asyncio.sleep(1.0)
            watch.sample()
            latest = await committed(box)
            left = await backlog() if backlog is not None else 0
            now = time.perf_counter()
            if latest != count:
                committed_at = now
            if (latest, left) != (count, pending):
                count, pending, progress_at = latest, left, now
            if count >= sent["readings_sent"] and pending == 0:
                processed_at = now
        drained = committed_at - started
        whole = watch.report((processed_at or time.perf_counter()) - started)
    finally:
        for ingest, client_id in ingests:
            await stop_ingest(box, ingest, client_id)
    summary = _usage_summary(usage)
    stage: dict[str, Any] = {
        "readings_per_message": readings,
        "ingest_processes": processes,
        "offered_messages_per_s": sent["sent_per_s"],
        "messages_sent": sent["sent"],
        "readings_sent": sent["readings_sent"],
        "readings_committed": count,
        "load_seconds": round(loaded, 2),
        "readings_per_s": during / loaded,
        "messages_per_s": during / readings / loaded,
        "backlog_at_end": sent["readings_sent"] - during,
        "drain_seconds": round(drained - loaded, 2),
        "lost": sent["readings_sent"] - count,
        "usage": summary,
    }
    if backlog is not None:
        stage["usage_until_processed"] = _usage_summary(whole)
        stage["unprocessed"] = pending
        stage["processed_seconds"] = None if processed_at is None else round(processed_at - started, 2)
    return stage


@dataclass(slots=True)
class Probes:
    """Publish->commit latencies in seconds, and how many probes were sent (the rest never showed up within
    10 s of the end: a percentile over `latencies` alone understates the tail when `sent` is larger)."""

    latencies: list[float] = field(default_factory=list)
    sent: int = 0


async def probe_commits(box: Sandbox, probe: DeviceCredential, rate: float, duration: float) -> Probes:
    """Publishes single readings from a probe device at `rate`/s and polls every 5 ms for each one's row."""
    conn = await box.connect(owner=True)
    device_id = await conn.fetchval("SELECT id FROM devices WHERE serial = $1", probe.serial)
    client = Connection(f"probe-{secrets.token_hex(3)}", probe.serial, probe.password, on_ack=lambda *_: None)
    await client.connect(box.broker)
    pending: dict[datetime, float] = {}
    out = Probes()
    stop = time.perf_counter() + duration
    origin = (datetime.now(UTC) - timedelta(seconds=1)).replace(microsecond=0)  # the wire keeps milliseconds

    async def poll() -> None:
        while time.perf_counter() < stop + 10 and (pending or time.perf_counter() < stop):
            if pending:
                rows = await conn.fetch(
                    "SELECT measured_at FROM vital_readings WHERE device_id = $1 AND vital_type_id = 1"
                    " AND measured_at = ANY($2::timestamptz[])",
                    device_id,
                    list(pending),
                )
                now = time.perf_counter()
                for row in rows:
                    out.latencies.append(now - pending.pop(row["measured_at"]))
            await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    try:
        while time.perf_counter() < stop:
            out.sent += 1
            seq = out.sent
            at = origin + timedelta(milliseconds=seq)
            message = Message(f"probe:{seq}", (Reading("heart_rate", 70, "/min", at),), meta={"probe": seq})
            pending[at] = time.perf_counter()
            await client.publish(readings_topic(probe.serial), message.encode(), seq)
            await asyncio.sleep(1 / rate)
        await poller
    finally:
        await client.close()
        await conn.close()
    return out


async def probe_latency(box: Sandbox, probe: DeviceCredential, rate: float, duration: float) -> list[float]:
    """`probe_commits`' latencies alone (publish->commit, seconds)."""
    return (await probe_commits(box, probe, rate, duration)).latencies


def latency_summary(latencies: list[float], sent: int | None = None) -> dict[str, float]:
    """Percentiles in ms and the count; with `sent`, also how many probes were sent."""
    values = sorted(latencies)
    summary = {f"p{q:g}": round(percentile(values, q) * 1000, 1) for q in (50, 90, 99, 100)} | {"n": len(values)}
    return summary if sent is None else summary | {"sent": sent}
