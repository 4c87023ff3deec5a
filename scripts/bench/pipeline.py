"""The pipeline under load: `python -m ingest run` in the sandbox, fed by the load generator.

Measures sustained committed readings/s (1- and 10-reading messages, QoS 1, ack after commit), publish->commit
latency percentiles at a fraction of that maximum (a probe device whose readings are polled for by primary key
every 5 ms), and RSS/CPU of each process. Skipped, with the reason, while ingest has no `run` command.
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
        [sys.executable, "-m", "ingest", "run", "--help"], cwd=ROOT, capture_output=True, check=False
    )
    if probe.returncode != 0:
        raise PipelineUnavailableError("ingest has no `python -m ingest run` command yet")
    return [sys.executable, "-m", "ingest", "run"]


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
        process = psutil.Process(pid)
        times = process.cpu_times()
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


def postgres_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def start_ingest(box: Sandbox, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (box.state_dir / "ingest.log").open("ab")
    return subprocess.Popen(
        ingest_command(), cwd=ROOT, env={**box.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT
    )


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
    box: Sandbox, credentials: Path, devices: int, readings: int, duration: float, extra_env: dict[str, str]
) -> dict[str, Any]:
    """Max-rate publishing for `duration` s into a running ingest; committed readings/s and resource use."""
    truncate(box)
    ingest = start_ingest(box, extra_env)
    watch = Watch()
    try:
        await asyncio.sleep(3)
        watch.add("ingest", ingest.pid)
        out = box.state_dir / f"sustained-{readings}.json"
        publisher = start_publisher(box, credentials, out, devices=devices, duration=duration, readings=readings)
        watch.add("load generator", publisher.pid)
        for pid in postgres_pids():
            watch.add(f"postgres {pid}", pid)
        started = time.perf_counter()
        while publisher.poll() is None:
            watch.sample()
            await asyncio.sleep(0.5)
        sent = result(out)
        # Drain: wait until the committed count stops growing.
        previous, count = -1, await committed(box)
        while count != previous:
            previous = count
            await asyncio.sleep(1.0)
            watch.sample()
            count = await committed(box)
        elapsed = time.perf_counter() - started
    finally:
        ingest.terminate()
        ingest.wait(30)
    usage = watch.report(elapsed)
    postgres = [v for k, v in usage.items() if k.startswith("postgres")]
    summary = {k: v for k, v in usage.items() if not k.startswith("postgres")}
    summary["postgres (all)"] = {
        "cpu_percent": round(sum(v["cpu_percent"] for v in postgres), 1),
        "peak_rss_mib": round(sum(v["peak_rss_mib"] for v in postgres), 1),
    }
    return {
        "readings_per_message": readings,
        "messages_sent": sent["sent"],
        "readings_sent": sent["readings_sent"],
        "readings_committed": count,
        "seconds": round(elapsed, 2),
        "readings_per_s": count / elapsed,
        "messages_per_s": count / readings / elapsed,
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
    origin = datetime.now(UTC) - timedelta(seconds=1)
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
