"""Benchmark: CPU time of ingest's pure path per message, with no services (deterministic, robust on a busy box).

The path is what `ingest serve` does in Python for every message besides MQTT and PostgreSQL I/O:
bytes -> JSON object -> validated message -> judged (registry, unit, time, plausibility, attribution) -> deduped
batch plan -> COPY records and hand-off events -> metrics. Payloads are the load generator's own
(`device_simulators.load.LoadMessages`: 1 or 10 readings, `meta.run`/`meta.seq`), 20 devices, batches of 200
messages (what a 50 ms batch holds at ~4k msg/s), a 200,000-identity recent cache as in production.

CPU is process time (`time.process_time`), the best of several rounds, so other engineers' load on the shared
cores barely moves it; the garbage collector is set as `ingest serve` sets it. `--profile` also prints the
cProfile top entries of one round.

`--serve` measures the whole `python -m ingest serve` process instead (a throw-away sandbox: its own database and
broker, PROCESSOR_TRANSPORT=discard): the load generator offers `--serve-messages` messages at `--serve-rate`
msg/s, and the ingest process's CPU seconds (user + system) from before the first message until every reading is
committed, divided by the messages, are its cost per message including MQTT, asyncio and asyncpg.

Usage: .venv/bin/python -m scripts.bench.ingest_cpu [--messages 20000] [--rounds 5] [--readings 1,10] [--profile]
       .venv/bin/python -m scripts.bench.ingest_cpu --serve [--serve-messages 60000] [--serve-rate 4000]
                        [--serve-rounds 3] [--ingest-tree DIR] [--uvloop] [--spy]
  --ingest-tree (repeatable) also runs a baseline checkout (`git archive <commit> ingest | tar -x -C DIR`),
  --uvloop also this tree under uvloop; variants take turns round by round and the median is reported.
  --spy: py-spy's top functions of each run.
       .venv/bin/python -m scripts.bench.ingest_cpu --asyncio-shape   (task + future + queue + callback per message)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
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


def _start_ingest(box: Sandbox, tree: Path | None, loop: str, spy: Path | None) -> subprocess.Popen[bytes]:
    """`pipeline.start_ingest`, optionally running the `ingest` package of another source tree (a baseline made
    with `git archive <commit> | tar -x -C DIR`; settings still come from this tree's .env and the sandbox) or
    under another event loop (`uvloop`: installed as the policy before `ingest serve` starts its loop), or under
    py-spy (raw samples into `spy`)."""
    if tree is None and loop == "default" and spy is None:
        return pipeline.start_ingest(box, ENV)
    env = {**box.env, "INGEST_METRICS_PORT": "0", "INGEST_MQTT_CLIENT_ID": pipeline.INGEST_CLIENT_ID, **ENV}
    path = "" if tree is None else f"sys.path.insert(0, {str(tree)!r}); "
    policy = "import uvloop; uvloop.install(); " if loop == "uvloop" else ""
    code = f"import runpy, sys; {path}{policy}runpy.run_module('ingest', run_name='__main__')"
    command = [sys.executable, "-c", code, "--log-level", "WARNING", "serve"]
    if spy is not None:
        py_spy = Path(sys.executable).with_name("py-spy")
        command = [str(py_spy), "record", "--rate", "200", "--format", "raw", "--output", str(spy), "--", *command]
    with (box.state_dir / "ingest-cpu.log").open("ab") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _top_functions(raw: Path, count: int = 25) -> str:
    """Self time by function (leaf frames) of a py-spy raw profile, in % of samples, with the callers of the
    top five (two frames up)."""
    leaf: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack:
            frames = stack.split(";")
            leaf[frames[-1]] += int(samples)
            callers.setdefault(frames[-1], Counter())[" < ".join(reversed(frames[-3:-1]))] += int(samples)
            total += int(samples)
    rows = [f"py-spy: {total} samples, self time by function"]
    for rank, (frame, n) in enumerate(leaf.most_common(count)):
        rows.append(f"{100 * n / total:5.1f} %  {frame}")
        if rank < 5:
            rows.extend(f"          {100 * c / total:5.1f} % from {who}" for who, c in callers[frame].most_common(3))
    return "\n".join(rows)


@dataclass(frozen=True, slots=True)
class Variant:
    """An ingest to measure: a source tree (None: this one) and an event loop."""

    name: str
    tree: Path | None = None
    loop: str = "default"


async def _serve_once(
    box: Sandbox, credentials: Path, variant: Variant, readings: int, count: int, rate: float, profile: bool
) -> dict[str, object]:
    pipeline.truncate(box)
    spy = box.state_dir / f"ingest-cpu-{readings}.spy" if profile else None
    ingest = _start_ingest(box, variant.tree, variant.loop, spy)
    try:
        await asyncio.sleep(3)
        process = psutil.Process(ingest.pid)
        if spy is not None:  # py-spy's child is the ingest process
            process = process.children()[0]
        before = _cpu_seconds(process)
        started = time.perf_counter()
        out = box.state_dir / f"ingest-cpu-{readings}.json"
        load = start_publisher(
            box, credentials, out, devices=DEVICES, rate=rate, duration=3600, messages=count, readings=readings
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
        if spy is not None:
            for child in psutil.Process(ingest.pid).children():
                child.terminate()
            await asyncio.to_thread(ingest.wait, 60)
        await pipeline.stop_ingest(box, ingest)
    result: dict[str, object] = {
        "ingest": variant.name,
        "readings_per_message": readings,
        "messages": count,
        "readings_committed": stored,
        "offered_msg_per_s": rate,
        "seconds": round(elapsed, 1),
        "ingest_cpu_s": round(cpu, 2),
        "us_per_message": round(cpu / count * 1e6, 1),
        "us_per_reading": round(cpu / (count * readings) * 1e6, 1),
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    if spy is not None:
        print(_top_functions(spy), file=sys.stderr, flush=True)
    return result


async def measure_serve(
    variants: list[Variant],
    readings_list: list[int],
    messages: int,
    rate: float,
    rounds: int,
    profile: bool = False,
) -> list[dict[str, object]]:
    """CPU of the ingest process per message, per variant and message size, in one sandbox. The variants take
    turns, `rounds` times, so the box's changing load falls on all of them alike; the median is reported."""
    summary: list[dict[str, object]] = []
    with sandbox() as box:
        fleet_ = box.provision("ingest-cpu", DEVICES)
        credentials = write_fleet(box, fleet_, "ingest-cpu-fleet")
        for readings in readings_list:
            count = messages if readings == 1 else messages // 5
            offered = rate if readings == 1 else rate / 5
            runs: dict[str, list[float]] = {v.name: [] for v in variants}
            for _ in range(rounds):
                for variant in variants:
                    result = await _serve_once(box, credentials, variant, readings, count, offered, profile)
                    if result["readings_committed"] == count * readings:
                        runs[variant.name].append(float(result["us_per_message"]))  # type: ignore[arg-type]
            for name, values in runs.items():
                summary.append(
                    {
                        "ingest": name,
                        "readings_per_message": readings,
                        "offered_msg_per_s": offered,
                        "us_per_message_runs": values,
                        "us_per_message_median": round(statistics.median(values), 1) if values else None,
                        "us_per_reading_median": round(statistics.median(values) / readings, 1) if values else None,
                    }
                )
    return summary


async def _handler_shape(messages: int, batch: int) -> float:
    """µs of CPU per message for the asyncio shape of ingest's MQTT path alone: a task per message (gmqtt runs the
    handler as one), a future and a bounded-queue hop (`Pipeline.submit`), a collector resolving the futures of
    a batch, and each task's done-callback (where gmqtt acknowledges). No I/O, no parsing."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[asyncio.Future[bool]] = asyncio.Queue(20_000)
    acks: list[int] = []
    all_acknowledged = asyncio.Event()

    async def handler() -> int:
        done: asyncio.Future[bool] = loop.create_future()
        await queue.put(done)
        return 0 if await done else 0x80

    async def collector() -> None:
        resolved = 0
        while resolved < messages:
            futures = [await queue.get()]
            while len(futures) < batch and not queue.empty():
                futures.append(queue.get_nowait())
            for done in futures:
                done.set_result(True)
            resolved += len(futures)
            await asyncio.sleep(0)

    def acknowledge(task: asyncio.Task[int]) -> None:
        acks.append(task.result())
        if len(acks) == messages:
            all_acknowledged.set()

    resolving = asyncio.ensure_future(collector())
    started = time.process_time()
    for i in range(messages):
        asyncio.ensure_future(handler()).add_done_callback(acknowledge)
        if i % batch == 0:
            await asyncio.sleep(0)
    await resolving
    await all_acknowledged.wait()
    return (time.process_time() - started) / messages * 1e6


def main(argv: list[str] | None = None) -> int:
    # The collector settings of `python -m ingest serve` (ingest/__main__.py), so allocation-driven collections
    # cost here what they cost there.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.ingest_cpu", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--readings", default="1,10")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--serve-messages", type=int, default=60_000)
    parser.add_argument("--serve-rate", type=float, default=4000)
    parser.add_argument("--serve-rounds", type=int, default=1)
    parser.add_argument(
        "--ingest-tree", type=Path, action="append", default=[], help="with --serve: also run this tree's ingest"
    )
    parser.add_argument("--uvloop", action="store_true", help="with --serve: also run this tree under uvloop")
    parser.add_argument("--spy", action="store_true", help="with --serve: py-spy's top functions of ingest")
    parser.add_argument("--asyncio-shape", action="store_true", help="the per-message asyncio machinery alone")
    args = parser.parse_args(argv)
    if args.asyncio_shape:
        best = min(asyncio.run(_handler_shape(200_000, BATCH)) for _ in range(3))
        print(json.dumps({"asyncio_task_future_queue_callback_us_per_message": round(best, 2)}))
        return 0
    readings_list = [int(r) for r in args.readings.split(",")]
    if args.serve:
        variants = [*(Variant(f"tree {tree}", tree) for tree in args.ingest_tree), Variant("this tree")]
        if args.uvloop:
            variants.append(Variant("this tree, uvloop", None, "uvloop"))
        served = asyncio.run(
            measure_serve(variants, readings_list, args.serve_messages, args.serve_rate, args.serve_rounds, args.spy)
        )
        print(json.dumps(served, indent=1))
        return 0
    results = [
        measure(int(r), args.messages if int(r) == 1 else args.messages // 5, args.rounds, args.profile)
        for r in readings_list
    ]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
