"""Ingest scaling and tuning: one against two ingest processes on the shared subscription
(`$share/ingest/devices/+/readings`, INGEST_MQTT_SHARE_GROUP), and a sweep of the batch settings
(INGEST_BATCH_MAX_SIZE for throughput under overload, INGEST_BATCH_MAX_AGE_S for publish->commit latency).

Ingest alone (PROCESSOR_TRANSPORT=none), like the other ingest stages.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from device_simulators.credentials import DeviceCredential
from scripts.bench import pipeline
from scripts.bench.load import start_publisher
from scripts.bench.report import overall_rate
from scripts.bench.sandbox import Sandbox

BATCH_SIZES = (100, 500, 2_000, 5_000)
# Scale-out sets its share group explicitly (the default is a plain subscription, for one process); the single
# process runs on the same shared subscription, so the comparison is about the process count only.
SHARED = {"INGEST_MQTT_SHARE_GROUP": "ingest"}
BATCH_AGES = (0.005, 0.05, 0.2)


def _say(text: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


async def processes(
    box: Sandbox, credentials: Path, devices: int, repeat: int, scale: float, best: float
) -> dict[str, Any]:
    """1-reading messages: one process offered 125 % of `best` (the single-process best, readings/s), two
    processes offered 250 % of it (125 % of perfect scaling), `repeat` times each, alternating."""
    out: dict[str, Any] = {"readings_per_message": 1, "one": [], "two": []}
    for run in range(repeat):
        for key, count in (("one", 1), ("two", 2)):
            rate = round(1.25 * count * best)
            _say(f"{count} ingest process(es), 1-reading messages offered at {rate:,} msg/s, run {run + 1}/{repeat}")
            out[key].append(
                await pipeline.sustained(box, credentials, devices, 1, 30 * scale, SHARED, rate=rate, processes=count)
            )
    return out


async def batch_sizes(box: Sandbox, credentials: Path, devices: int, scale: float, best: float) -> list[dict[str, Any]]:
    """10-reading messages offered at 125 % of `best` (readings/s) under each INGEST_BATCH_MAX_SIZE (messages)."""
    rate = round(1.25 * best / 10)
    runs = []
    for size in BATCH_SIZES:
        _say(f"batch size {size:,} messages: 10-reading messages offered at {rate:,} msg/s")
        stage = await pipeline.sustained(
            box, credentials, devices, 10, 20 * scale, {"INGEST_BATCH_MAX_SIZE": str(size)}, rate=rate
        )
        stage["batch_max_size"] = size
        stage["sustained_readings_per_s"] = overall_rate(stage)
        runs.append(stage)
    return runs


async def batch_ages(
    box: Sandbox, credentials: Path, devices: int, scale: float, top: float, probe: DeviceCredential
) -> dict[str, Any]:
    """Publish->commit latency at 50 % of `top` (1-reading messages/s) under each INGEST_BATCH_MAX_AGE_S."""
    out: dict[str, Any] = {}
    for age in BATCH_AGES:
        _say(f"batch age {age * 1000:g} ms: publish->commit latency at 50% of {top:,.0f} msg/s")
        pipeline.truncate(box)
        ingest = pipeline.start_ingest(box, {"INGEST_BATCH_MAX_AGE_S": str(age)})
        try:
            await asyncio.sleep(3)
            load = start_publisher(
                box, credentials, box.state_dir / f"age-load-{age}.json", devices=devices, rate=0.5 * top,
                duration=15 * scale + 5,
            )  # fmt: skip
            probes = await pipeline.probe_commits(box, probe, 20, 15 * scale)
            await asyncio.to_thread(load.wait)
        finally:
            await pipeline.stop_ingest(box, ingest)
        out[f"{age * 1000:g} ms"] = pipeline.latency_summary(probes.latencies, probes.sent)
    return out
