"""The pipeline under load: `python -m ingest serve` in the sandbox, fed by the load generator.

Measures sustained committed readings/s (1- and 10-reading messages, QoS 1, ack after commit), publish->commit
latency percentiles at a fraction of that maximum (a probe device whose readings are polled for by primary key
every 5 ms), and RSS/CPU of each process. Skipped, with the reason, while ingest has no `serve` command.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
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
    usages: list[Usage] = field(default_factory=list)

    def add(self, name: str, pid: int) -> None:
        try:
            process = psutil.Process(pid)
            times = process.cpu_times()
        except psutil.Error:
            return
        self.usages.append(Usage(name, process, cpu_start=times.user + times.system))

    def sample(self) -> None:
        for usage in self.usages:
            usage.sample()

    def report(self, seconds: float) -> dict[str, dict[str, float]]:
        return {
            u.name: {
                "cpu_percent": round(100 * (u.cpu_end - u.cpu_start) / seconds, 1),
                "peak_rss_mib": round(u.peak_rss / 2**20, 1),
            }
            for u in self.usages
        }


def postgres_pids(box: Sandbox) -> list[int]:
    """The sandbox database's backends and the server's own writers (WAL writer, checkpointer, …), found by
    process title; not the backends other people's work has open on the shared server."""
    own = (f" {box.database} ", "walwriter", "checkpointer", "background writer", "wal writer")
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = " ".join(proc.info["cmdline"] or []) + " "
        if proc.info["name"] == "postgres" and any(mark in title for mark in own):
            pids.append(proc.pid)
    return pids


INGEST_CLIENT_ID = "bench-ingest-1"


def start_ingest(box: Sandbox, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Starts `python -m ingest serve` in the sandbox; stop it with `stop_ingest`."""
    log = (box.state_dir / "ingest.log").open("ab")
    env = {
        **box.env,
        "INGEST_METRICS_PORT": "0",
        "INGEST_MQTT_CLIENT_ID": INGEST_CLIENT_ID,
        "PROCESSOR_TRANSPORT": "none",
        **extra_env,
    }
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


def truncate(box: Sandbox) -> None:
    with box.admin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename IN ('ingest_rejections', 'ingest_outbox', 'outbox', 'reading_outbox')"
            ).fetchall()
        ]
        conn.execute("TRUNCATE " + ", ".join(["vital_readings", *tables]))


async def committed(box: Sandbox) -> int:
    conn = await box.connect(owner=True)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM vital_readings"))
    finally:
        await conn.close()


async def sustained(
    box: Sandbox,
    credentials: Path,
    devices: int,
    readings: int,
    duration: float,
    extra_env: dict[str, str],
    rate: float = 0,
) -> dict[str, Any]:
    """Offers `rate` messages/s (0: as fast as the broker takes them) for `duration` s to a running ingest.

    Throughput is what was committed while the load ran; then the backlog drains, and every reading sent must be
    committed (`lost` counts those that never are, within 15 s of no progress).
    """
    truncate(box)
    ingest = start_ingest(box, extra_env)
    watch = Watch()
    try:
        await asyncio.sleep(3)
        if ingest.poll() is not None:
            raise PipelineUnavailableError(f"ingest exited at start (see {box.state_dir / 'ingest.log'})")
        watch.add("ingest", ingest.pid)
        out = box.state_dir / f"sustained-{readings}-{int(rate)}.json"
        publisher = start_publisher(
            box, credentials, out, devices=devices, duration=duration, readings=readings, rate=rate
        )
        watch.add("load generator", publisher.pid)
        for pid in postgres_pids(box):
            watch.add(f"postgres {pid}", pid)
        started = time.perf_counter()
        while publisher.poll() is None:
            watch.sample()
            await asyncio.sleep(0.5)
        loaded = time.perf_counter() - started
        during = await committed(box)
        usage = watch.report(loaded)
        sent = result(out)
        count, progress_at = during, time.perf_counter()
        while count < sent["readings_sent"] and time.perf_counter() - progress_at < 15:
            await asyncio.sleep(1.0)
            latest = await committed(box)
            if latest != count:
                count, progress_at = latest, time.perf_counter()
        drained = progress_at - started
    finally:
        await stop_ingest(box, ingest)
    postgres = [v for k, v in usage.items() if k.startswith("postgres")]
    summary = {k: v for k, v in usage.items() if not k.startswith("postgres")}
    summary["postgres (all)"] = {
        "cpu_percent": round(sum(v["cpu_percent"] for v in postgres), 1),
        "peak_rss_mib": round(sum(v["peak_rss_mib"] for v in postgres), 1),
    }
    return {
        "readings_per_message": readings,
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


async def probe_latency(box: Sandbox, probe: DeviceCredential, rate: float, duration: float) -> list[float]:
    """Publishes single readings from a probe device at `rate`/s and polls every 5 ms for each one's row:
    publish->commit latencies in seconds."""
    conn = await box.connect(owner=True)
    device_id = await conn.fetchval("SELECT id FROM devices WHERE serial = $1", probe.serial)
    client = Connection(f"probe-{secrets.token_hex(3)}", probe.serial, probe.password, on_ack=lambda *_: None)
    await client.connect(box.broker)
    pending: dict[datetime, float] = {}
    latencies: list[float] = []
    stop = time.perf_counter() + duration
    origin = (datetime.now(UTC) - timedelta(seconds=1)).replace(microsecond=0)  # the wire keeps milliseconds
    seq = 0

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
                    latencies.append(now - pending.pop(row["measured_at"]))
            await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    try:
        while time.perf_counter() < stop:
            seq += 1
            at = origin + timedelta(milliseconds=seq)
            message = Message(f"probe:{seq}", (Reading("heart_rate", 70, "/min", at),), meta={"probe": seq})
            pending[at] = time.perf_counter()
            await client.publish(readings_topic(probe.serial), message.encode(), seq)
            await asyncio.sleep(1 / rate)
        await poller
    finally:
        await client.close()
        await conn.close()
    return latencies


def latency_summary(latencies: list[float]) -> dict[str, float]:
    values = sorted(latencies)
    return {f"p{q:g}": round(percentile(values, q) * 1000, 1) for q in (50, 90, 99, 100)} | {"n": len(values)}
