"""`make bench`: one command, one run on this machine, from empty tables, durability on; writes
docs/benchmarks.md (between its markers) and the PNG plots beside it.

Usage: .venv/bin/python -m scripts.bench.run [--repeat 3] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from scripts.bench import baselines, ceilings, handoff, pipeline, report, scaling
from scripts.bench.load import result, start_publisher, write_fleet
from scripts.bench.machine import describe
from scripts.bench.sandbox import ROOT, Sandbox, sandbox

logger = logging.getLogger("bench")
DOCS = ROOT / "docs"
# The raw results of the last run (outside the repository), for `--from-json` re-renders of the page.
LAST_RESULTS = Path(os.environ.get("RPM_STATE_DIR", "/var/tmp/rpm-telemetry")) / "bench-results.json"


def _say(text: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


async def measure(box: Sandbox, repeat: int, quick: bool) -> dict[str, Any]:
    scale = 0.1 if quick else 1.0
    devices = 20
    fleet = box.provision("bench-load", devices)
    credentials = write_fleet(box, fleet, "load-fleet")
    results: dict[str, Any] = {"machine": describe(box), "repeat": repeat}

    rows, batch = int(200_000 * scale), 5000
    c: dict[str, Any] = {
        "batch": batch,
        "publisher_devices": devices,
        "copy_unindexed": [],
        "copy_vital_readings": [],
        "gmqtt_receive": [],
        "paho_receive": [],
        "publisher": [],
        "gmqtt_receive_multiplexed": [],
        "publisher_multiplexed": [],
    }
    ceilings.prepare_unindexed(box)
    for run in range(repeat):
        _say(f"COPY ceilings, run {run + 1}/{repeat}: {rows:,} rows")
        for key, value in (await ceilings.copy_ceilings(box, rows, batch, run)).items():
            c[key].append(value)
    pipeline.truncate(box)

    messages = int(300_000 * scale)
    for run in range(repeat):
        _say(f"broker -> gmqtt, run {run + 1}/{repeat}: {messages:,} messages")
        out = box.state_dir / f"raw-gmqtt-{run}.json"
        c["gmqtt_receive"].append(
            await ceilings.gmqtt_receive(
                box,
                messages,
                partial(start_publisher, box, credentials, out, devices=devices, duration=600, messages=messages),
            )
        )
        c["publisher"].append(result(out)["sent_per_s"])
        _say(f"broker -> gmqtt, multiplexed load generator, run {run + 1}/{repeat}")
        out = box.state_dir / f"raw-gmqtt-mux-{run}.json"
        c["gmqtt_receive_multiplexed"].append(
            await ceilings.gmqtt_receive(
                box,
                messages,
                partial(
                    start_publisher,
                    box,
                    credentials,
                    out,
                    devices=devices,
                    duration=600,
                    messages=messages,
                    multiplex=4,
                ),
            )
        )
        c["publisher_multiplexed"].append(result(out)["sent_per_s"])
        _say(f"broker -> paho, run {run + 1}/{repeat}")
        out = box.state_dir / f"raw-paho-{run}.json"
        paho_messages = messages // 3
        c["paho_receive"].append(
            ceilings.paho_receive(
                box,
                paho_messages,
                partial(start_publisher, box, credentials, out, devices=devices, duration=600, messages=paho_messages),
            )
        )
    results["ceilings"] = c

    # publish -> PUBACK latency from the load generator alone at 50 % and 90 % of its measured maximum.
    top = report.median(c["publisher"])
    samples: dict[str, list[float]] = {}
    for share in (0.5, 0.9):
        _say(f"load generator at {share:.0%} of {top:,.0f} msg/s")
        out = box.state_dir / f"ack-latency-{share}.json"
        proc = start_publisher(box, credentials, out, devices=devices, rate=share * top, duration=10 * scale + 2)
        await asyncio.to_thread(proc.wait)
        samples[f"{share:.0%} of max"] = result(out)["ack_latency_sample_s"]
    results["ack_latency_samples"] = samples

    b: dict[str, Any] = {"batch": 1000, "row_at_a_time": [], "executemany": []}
    for run in range(repeat):
        for key, count, batch_size in (
            ("row_at_a_time", int(10_000 * scale), None),
            ("executemany", int(100_000 * scale), 1000),
        ):
            pipeline.truncate(box)
            _say(f"baseline {key}, run {run + 1}/{repeat}: {count:,} messages")
            out = box.state_dir / f"baseline-{key}-{run}.json"
            measured = await asyncio.to_thread(
                baselines.run_baseline,
                box,
                count,
                partial(start_publisher, box, credentials, out, devices=devices, duration=600, messages=count),
                batch=batch_size,
            )
            b[key].append(measured["rows_per_s"])
    results["baselines"] = b

    p: dict[str, Any] = {}
    try:
        pipeline.ingest_command()
    except pipeline.PipelineUnavailableError as exc:
        p["skipped"] = str(exc)
        _say(f"pipeline skipped: {exc}")
    else:
        await _pipeline(box, credentials, devices, repeat, scale, p)
        ten = report.median([report.overall_rate(r) for r in p["ten"]])
        results["processors"] = await handoff.measure(box, fleet, credentials, repeat, scale, 1.25 * ten / 10)
    results["pipeline"] = p
    return results


SWEEP = {1: (2_000, 5_000, 10_000, 15_000, 20_000, 30_000), 10: (500, 1_000, 2_000, 4_000, 6_000, 8_000)}


async def _pipeline(
    box: Sandbox, credentials: Path, devices: int, repeat: int, scale: float, p: dict[str, Any]
) -> None:
    """Throughput vs offered load (one pass), the maximum (repeated), latency at 50 % and 90 % of it, then one vs
    two ingest processes (repeated) and the batch settings (one pass)."""
    p["sweep"], best = {}, {}
    for readings, levels in SWEEP.items():
        p["sweep"][readings] = []
        best[readings] = 0.0
        for rate in levels:
            _say(f"pipeline {readings}-reading messages offered at {rate:,} msg/s")
            stage = await pipeline.sustained(box, credentials, devices, readings, 30 * scale, {}, rate=rate)
            p["sweep"][readings].append(stage)
            best[readings] = max(best[readings], report.overall_rate(stage) / readings)
            # Saturated: more than two seconds of offered load left queued. Higher levels only grow the backlog.
            if stage["backlog_at_end"] > 2 * rate * readings:
                break
    p["one"], p["ten"] = [], []
    for run in range(repeat):
        for key, readings in (("one", 1), ("ten", 10)):
            # A bounded overload (125 % of the best seen) keeps the broker's backlog, and the drain, short.
            rate = round(1.25 * best[readings])
            _say(f"pipeline {readings}-reading messages offered at {rate:,} msg/s, run {run + 1}/{repeat}")
            p[key].append(await pipeline.sustained(box, credentials, devices, readings, 60 * scale, {}, rate=rate))
    probe_fleet = box.provision("bench-probe", 1)
    top = report.median([report.overall_rate(r) for r in p["one"]])
    p["latency"], p["latency_samples"] = {}, {}
    for share in (0.5, 0.9):
        _say(f"publish->commit latency at {share:.0%} of {top:,.0f} msg/s")
        pipeline.truncate(box)
        ingest = pipeline.start_ingest(box, {})
        try:
            await asyncio.sleep(3)
            out = box.state_dir / f"latency-load-{share}.json"
            load = start_publisher(box, credentials, out, devices=devices, rate=share * top, duration=30 * scale + 5)
            probes = await pipeline.probe_commits(box, probe_fleet.devices[0], 20, 30 * scale)
            await asyncio.to_thread(load.wait)
        finally:
            await pipeline.stop_ingest(box, ingest)
        p["latency"][f"{share:.0%}"] = pipeline.latency_summary(probes.latencies, probes.sent)
        p["latency_samples"][f"{share:.0%} of max"] = probes.latencies
    p["processes"] = await scaling.processes(box, credentials, devices, repeat, scale, top)
    ten = report.median([report.overall_rate(r) for r in p["ten"]])
    p["batch_sizes"] = await scaling.batch_sizes(box, credentials, devices, scale, ten)
    p["batch_ages"] = await scaling.batch_ages(box, credentials, devices, scale, top, probe_fleet.devices[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the volumes (a smoke run; numbers noisy)")
    parser.add_argument(
        "--json", type=Path, default=LAST_RESULTS, help=f"also write the raw results here (default {LAST_RESULTS})"
    )
    parser.add_argument("--page", type=Path, default=DOCS / "benchmarks.md")
    parser.add_argument("--from-json", type=Path, default=None, help="only re-render the page from saved results")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        plots = report.plot(results, args.page.parent)
        report.write_page(args.page, report.render(results, plots))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    started = time.monotonic()
    with sandbox() as box:
        results = asyncio.run(measure(box, args.repeat, args.quick))
    results["started_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["seconds"] = round(time.monotonic() - started)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    plots = report.plot(results, args.page.parent)
    report.write_page(args.page, report.render(results, plots))
    _say(f"done in {results['seconds']} s: {args.page} and {len(plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
