"""Benchmark: CPU time of ingest's pure path per message, with no services (deterministic, robust on a busy box).

The path is what `ingest serve` does in Python for every message besides MQTT and PostgreSQL I/O:
bytes -> JSON object -> validated message -> judged (registry, unit, time, plausibility, attribution) -> deduped
batch plan -> COPY records and hand-off events -> metrics. Payloads are the load generator's own
(`device_simulators.load.LoadMessages`: 1 or 10 readings, `meta.run`/`meta.seq`), 20 devices, batches of 200
messages (what a 50 ms batch holds at ~4k msg/s), a 200,000-identity recent cache as in production.

CPU is process time (`time.process_time`), the best of several rounds, so other engineers' load on the shared
cores barely moves it. `--profile` also prints the cProfile top entries of one round.

`--serve` measures the whole `python -m ingest serve` process instead (a throw-away sandbox: its own database and
broker, PROCESSOR_TRANSPORT=discard): the load generator offers `--serve-messages` messages at `--serve-rate`
msg/s, and the ingest process's CPU seconds (user + system) from before the first message until every reading is
committed, divided by the messages, are its cost per message including MQTT, asyncio and asyncpg.

Usage: .venv/bin/python -m scripts.bench.ingest_cpu [--messages 20000] [--rounds 5] [--readings 1,10] [--profile]
       .venv/bin/python -m scripts.bench.ingest_cpu --serve [--serve-messages 60000] [--serve-rate 4000]
                                                    [--ingest-tree DIR]   (a baseline checkout, for before/after)
                                                    [--loop uvloop]       (what the event loop costs)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import psutil

from device_simulators.load import LoadMessages
from ingest.admission import Envelope, Limits
from ingest.directory import Assignment, DeviceRecord
from ingest.identity import RecentIdentities
from ingest.metrics import Metrics
from ingest.units import UnitRegistry, build_registry
from ingest.writer import judge_batch, parse_batch
from scripts.bench import pipeline
from scripts.bench.load import start_publisher, write_fleet
from scripts.bench.sandbox import ROOT, Sandbox, sandbox

# Migration 0030's vital types and units (the ones a load run touches, and blood pressure for cross-field rules).
TYPE_ROWS: list[tuple[int, str, str, list[str], str, float, float, int]] = [
    (1, "heart_rate", "8867-4", [], "/min", 20, 300, 0),
    (2, "systolic_bp", "8480-6", [], "mm[Hg]", 40, 300, 0),
    (3, "diastolic_bp", "8462-4", [], "mm[Hg]", 20, 200, 0),
    (6, "body_temperature", "8310-5", [], "Cel", 30, 45, 1),
]
UNIT_ROWS: list[tuple[int, str, float, float]] = [
    (1, "/min", 1, 0),
    (1, "{beats}/min", 1, 0),
    (2, "mm[Hg]", 1, 0),
    (3, "mm[Hg]", 1, 0),
    (6, "Cel", 1, 0),
    (6, "[degF]", 5.0 / 9.0, -32),
]
DEVICES = 20
ENV = {"PROCESSOR_TRANSPORT": "discard"}
BATCH = 200
NOW = datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC)


def registry() -> UnitRegistry:
    return build_registry(TYPE_ROWS, UNIT_ROWS)


def fleet() -> dict[str, DeviceRecord]:
    """20 devices, each assigned since 60 days before NOW (one closed earlier assignment, as after a handover)."""
    devices = {}
    for i in range(DEVICES):
        serial = f"bench-{i:04d}"
        history = (
            Assignment(UUID(int=10_000 + i), NOW - timedelta(days=90), NOW - timedelta(days=60)),
            Assignment(UUID(int=20_000 + i), NOW - timedelta(days=60), None),
        )
        devices[serial] = DeviceRecord(UUID(int=i + 1), UUID(int=999), serial, False, history)
    return devices


def envelopes(readings: int, messages: int) -> list[Envelope]:
    """`messages` load-generator messages spread round-robin over the fleet, received at NOW."""
    origin = NOW - timedelta(hours=12)
    makers = [LoadMessages(f"run{i}", readings, origin, seed=i) for i in range(DEVICES)]
    out = []
    for n in range(messages):
        device, seq = n % DEVICES, n // DEVICES + 1
        out.append(Envelope(f"devices/bench-{device:04d}/readings", makers[device].payload(seq), NOW))
    return out


def run_once(batch_list: Sequence[Sequence[Envelope]], units: UnitRegistry, directory: dict[str, DeviceRecord]) -> int:
    """Runs every batch through the pure path; returns the readings made ready for COPY."""
    limits = Limits()
    recent = RecentIdentities(200_000)
    metrics = Metrics()
    rows = 0
    for batch in batch_list:
        judged = judge_batch(batch, parse_batch(batch, limits), directory, units, limits, recent)
        records = judged.records()
        written = judged.settle({}).written(judged.verdicts, units, outbox_id=1)
        metrics.record(written, 0.01)
        for reading in judged.plan.rows:
            recent.remember(reading.key, reading.value)
        rows += len(records)
    return rows


def measure(readings: int, messages: int, rounds: int, profile: bool) -> dict[str, float]:
    units, directory = registry(), fleet()
    data = envelopes(readings, messages)
    batches = [data[i : i + BATCH] for i in range(0, len(data), BATCH)]
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run_once(batches, units, directory)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime")
        print(f"--- {readings}-reading messages: cProfile top entries (tottime) ---", file=sys.stderr)
        stats.print_stats(22)
    best = float("inf")
    rows = 0
    for _ in range(rounds):
        started = time.process_time()
        rows = run_once(batches, units, directory)
        best = min(best, time.process_time() - started)
    if rows != messages * readings:
        raise SystemExit(f"expected {messages * readings} rows ready for COPY, got {rows}")
    return {
        "readings_per_message": readings,
        "messages": messages,
        "us_per_message": round(best / messages * 1e6, 2),
        "us_per_reading": round(best / (messages * readings) * 1e6, 2),
        "pure_ceiling_msg_per_s_one_core": round(messages / best),
    }


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _start_ingest(box: Sandbox, tree: Path | None, loop: str) -> subprocess.Popen[bytes]:
    """`pipeline.start_ingest`, optionally running the `ingest` package of another source tree (a baseline made
    with `git archive <commit> | tar -x -C DIR`; settings still come from this tree's .env and the sandbox) or
    under another event loop (`uvloop`: installed as the policy before `ingest serve` starts its loop)."""
    if tree is None and loop == "default":
        return pipeline.start_ingest(box, ENV)
    env = {**box.env, "INGEST_METRICS_PORT": "0", "INGEST_MQTT_CLIENT_ID": pipeline.INGEST_CLIENT_ID, **ENV}
    path = "" if tree is None else f"sys.path.insert(0, {str(tree)!r}); "
    policy = "import uvloop; uvloop.install(); " if loop == "uvloop" else ""
    code = f"import runpy, sys; {path}{policy}runpy.run_module('ingest', run_name='__main__')"
    command = [sys.executable, "-c", code, "--log-level", "WARNING", "serve"]
    with (box.state_dir / "ingest-cpu.log").open("ab") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def measure_serve(
    readings_list: list[int], messages: int, rate: float, tree: Path | None = None, loop: str = "default"
) -> list[dict[str, object]]:
    """CPU of the ingest process per message, for each message size, in one sandbox."""
    results: list[dict[str, object]] = []
    with sandbox() as box:
        fleet_ = box.provision("ingest-cpu", DEVICES)
        credentials = write_fleet(box, fleet_, "ingest-cpu-fleet")
        for readings in readings_list:
            count = messages if readings == 1 else messages // 5
            pipeline.truncate(box)
            ingest = _start_ingest(box, tree, loop)
            try:
                await asyncio.sleep(3)
                process = psutil.Process(ingest.pid)
                before = _cpu_seconds(process)
                started = time.perf_counter()
                out = box.state_dir / f"ingest-cpu-{readings}.json"
                offered = rate if readings == 1 else rate / 5
                load = start_publisher(
                    box,
                    credentials,
                    out,
                    devices=DEVICES,
                    rate=offered,
                    duration=3600,
                    messages=count,
                    readings=readings,
                )
                stored, progress_at = 0, time.perf_counter()
                while stored < count * readings and time.perf_counter() - progress_at < 30:
                    await asyncio.sleep(0.5)
                    now_stored = await pipeline.committed(box)
                    if now_stored > stored:
                        stored, progress_at = now_stored, time.perf_counter()
                cpu = _cpu_seconds(process) - before
                elapsed = time.perf_counter() - started
                await asyncio.to_thread(load.wait, 60)
            finally:
                await pipeline.stop_ingest(box, ingest)
            results.append(
                {
                    "readings_per_message": readings,
                    "ingest": f"{tree or 'this tree'}, {loop} event loop",
                    "messages": count,
                    "readings_committed": stored,
                    "offered_msg_per_s": offered,
                    "seconds": round(elapsed, 1),
                    "ingest_cpu_s": round(cpu, 2),
                    "us_per_message": round(cpu / count * 1e6, 1),
                    "us_per_reading": round(cpu / (count * readings) * 1e6, 1),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.ingest_cpu", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--readings", default="1,10")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--serve-messages", type=int, default=60_000)
    parser.add_argument("--serve-rate", type=float, default=4000)
    parser.add_argument("--ingest-tree", type=Path, help="with --serve: run the ingest package of this source tree")
    parser.add_argument("--loop", choices=["default", "uvloop"], default="default", help="with --serve")
    args = parser.parse_args(argv)
    readings_list = [int(r) for r in args.readings.split(",")]
    if args.serve:
        served = asyncio.run(
            measure_serve(readings_list, args.serve_messages, args.serve_rate, args.ingest_tree, args.loop)
        )
        print(json.dumps(served, indent=1))
        return 0
    results = [
        measure(int(r), args.messages if int(r) == 1 else args.messages // 5, args.rounds, args.profile)
        for r in args.readings.split(",")
    ]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
