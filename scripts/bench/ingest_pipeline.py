"""Benchmark: the ingest pipeline end to end, in the bench sandbox (fresh database, private broker).

Stages (one run, durability on, PROCESSOR_TRANSPORT=discard so outbox rows are written and relayed):
  ceiling     raw COPY of 10-reading-message rows into an unindexed copy of vital_readings (the owner's)
  one         1-reading messages at QoS 1, ack after commit, offered as fast as the load generator can
  ten         10-reading messages, same
  latency     publish->commit p50/p90/p99 of a probe device while the fleet runs at half of `one`'s maximum
  profile     py-spy samples of the ingest process at maximum load (1-reading messages): where its CPU goes
Each stage reports messages/s, readings/s, CPU % and peak RSS per process (ingest, load generator, PostgreSQL).

Usage: .venv/bin/python -m scripts.bench.ingest_pipeline [--duration 60] [--stages one,ten,latency,profile,ceiling]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from scripts.bench import ceilings, pipeline
from scripts.bench.load import start_publisher, write_fleet
from scripts.bench.sandbox import ROOT, Sandbox, sandbox

ENV = {"PROCESSOR_TRANSPORT": "discard"}


def _say(text: str) -> None:
    print(f"[ingest-bench {datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


async def ceiling(box: Sandbox, rows: int, devices: int) -> dict[str, float]:
    table = ceilings.prepare_unindexed(box)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    data = ceilings.readings_rows(rows, devices, start)
    return {"rows": rows, "copy_unindexed_rows_per_s": round(await ceilings.copy_rate(box, table, data, 2000))}


async def latency(box: Sandbox, credentials: Path, devices: int, rate: float, seconds: float) -> dict[str, Any]:
    probe = box.provision("ingest-bench-probe", 1).devices[0]
    pipeline.truncate(box)
    ingest = pipeline.start_ingest(box, ENV)
    try:
        await asyncio.sleep(3)
        out = box.state_dir / f"latency-{int(rate)}.json"
        load = start_publisher(box, credentials, out, devices=devices, rate=rate, duration=seconds + 5)
        samples = await pipeline.probe_latency(box, probe, 20, seconds)
        await asyncio.to_thread(load.wait)
    finally:
        await pipeline.stop_ingest(box, ingest)
    return {"fleet_rate_msg_per_s": round(rate), **pipeline.latency_summary(samples)}


def _component(frame: str) -> str:
    """A sampled frame's owner: our module, or the library/runtime it belongs to."""
    for marker, name in (
        ("ingest/", "ingest."),
        ("gmqtt/", "gmqtt"),
        ("asyncpg/", "asyncpg"),
        ("pydantic", "pydantic"),
        ("json/", "json"),
        ("asyncio/", "asyncio (event loop)"),
        ("prometheus_client", "prometheus_client"),
        ("uuid.py", "uuid"),
        ("datetime", "datetime"),
    ):
        if marker in frame:
            if name == "ingest.":
                module = frame.split("ingest/")[1].split(".py", maxsplit=1)[0]
                return f"ingest.{module}"
            return name
    return "other"


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Self time by component (leaf frames) and inclusive time of our pipeline stages, in % of samples."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf[_component(frames[-1])] += count
        for stage in {_component(f) for f in frames if "ingest/" in f}:
            inclusive[stage] += count
        idle = frames[-1].startswith("select (") or "epoll" in frames[-1] or "_run_once" in frames[-1]
        if idle:
            inclusive["idle (waiting in the event loop)"] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "self_percent": {k: pct(v) for k, v in leaf.most_common(12)},
        "inclusive_percent": {k: pct(v) for k, v in inclusive.most_common(12)},
    }


def _spawn_profiled(box: Sandbox, raw: Path) -> subprocess.Popen[bytes]:
    """`python -m ingest serve` under py-spy (spawned: attaching to a running process needs ptrace rights)."""
    log = (box.state_dir / "ingest-profiled.log").open("ab")
    env = {**box.env, "INGEST_METRICS_PORT": "0", "INGEST_MQTT_CLIENT_ID": pipeline.INGEST_CLIENT_ID, **ENV}
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking", "--"]
    return subprocess.Popen(
        [*command, *pipeline.ingest_command()], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def profile(box: Sandbox, credentials: Path, devices: int, seconds: float) -> dict[str, Any]:
    """Samples the ingest process at maximum 1-reading load."""
    pipeline.truncate(box)
    raw = box.state_dir / "ingest-profile.txt"
    spy = _spawn_profiled(box, raw)
    try:
        await asyncio.sleep(4)
        out = box.state_dir / "profile-load.json"
        load = start_publisher(box, credentials, out, devices=devices, duration=seconds, readings=1)
        await asyncio.to_thread(load.wait)
    finally:
        for child in psutil.Process(spy.pid).children():
            child.send_signal(signal.SIGTERM)
        await asyncio.to_thread(spy.wait, 60)
        await pipeline.stop_ingest(box, spy)
    return summarize_profile(raw)


async def measure(stages: list[str], duration: float, devices: int) -> dict[str, Any]:
    results: dict[str, Any] = {"duration_s": duration, "devices": devices, "transport": ENV["PROCESSOR_TRANSPORT"]}
    with sandbox() as box:
        fleet = box.provision("ingest-bench", devices)
        credentials = write_fleet(box, fleet, "ingest-bench-fleet")
        if "ceiling" in stages:
            _say("raw COPY ceiling")
            results["ceiling"] = await ceiling(box, 300_000, devices)
        for key, readings in (("one", 1), ("ten", 10)):
            if key in stages:
                _say(f"{readings}-reading messages at maximum for {duration:.0f} s")
                results[key] = await pipeline.sustained(box, credentials, devices, readings, duration, ENV)
                _say(json.dumps({k: v for k, v in results[key].items() if k != "usage"}))
        if "latency" in stages:
            top = results.get("one", {}).get("messages_per_s") or 8000.0
            _say(f"latency at half of {top:,.0f} msg/s")
            results["latency"] = await latency(box, credentials, devices, top / 2, min(duration, 30))
        if "profile" in stages:
            _say("profile at maximum load")
            results["profile"] = await profile(box, credentials, devices, min(duration, 30))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.ingest_pipeline", description=__doc__)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--stages", default="ceiling,one,ten,latency,profile")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    results = asyncio.run(measure(args.stages.split(","), args.duration, args.devices))
    results["seconds"] = round(time.monotonic() - started)
    text = json.dumps(results, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
