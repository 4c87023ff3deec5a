"""The processors behind ingest, end to end: inline (in the ingest process, fed by the outbox relay) against Kafka
(ingest produces, the Faust worker consumes), and publish->notification latency. The processors on their own
(pure engine, runners without ingest, the Faust worker against a bare aiokafka consumer on the same topic) are
scripts/bench/processors.py's.

The load fleet's patients are monitored (scripts.bench.clinic), so the processors judge every reading; their
heart rates never breach, so the only pages are the probe's. Clock ticks are off (PROCESSOR_TICK_INTERVAL_S=0) in
both runners: in the Faust runner they are records on the readings topic, which would blur the count.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from device_simulators.credentials import Fleet
from device_simulators.tally import percentile
from scripts.bench import pipeline, streams
from scripts.bench.clinic import monitor
from scripts.bench.load import start_publisher
from scripts.bench.paging import Paging, probe_paging
from scripts.bench.report import median, processed_rate, worker_died
from scripts.bench.sandbox import Sandbox

logger = logging.getLogger(__name__)

PROCESSORS_ENV = {"PROCESSOR_TICK_INTERVAL_S": "0"}
INLINE_ENV = {"PROCESSOR_TRANSPORT": "inline", **PROCESSORS_ENV}
READINGS = 10  # readings per message: the heaviest per-reading load ingest can offer the processors


def _say(text: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


async def outbox_backlog(box: Sandbox) -> int:
    """Readings committed and not yet handed to (inline) or produced for (Kafka) the processors."""
    conn = await box.connect(owner=True)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(cardinality(device_ids)), 0) FROM ingest_outbox"))
    finally:
        await conn.close()


def paging_summary(paging: Paging) -> dict[str, Any]:
    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {f"p{q:g}": round(percentile(ordered, q) * 1000, 1) for q in (50, 90, 99, 100)} | {"n": len(ordered)}

    return {"commit": summary(paging.commit), "page": summary(paging.page), "sent": paging.sent,
            "unpaged": paging.unpaged, "retrospective": paging.retrospective}  # fmt: skip


async def _inline_runs(
    box: Sandbox, credentials: Path, devices: int, repeat: int, burst: int, rate: float
) -> list[dict[str, Any]]:
    runs = []
    for run in range(repeat):
        _say(f"inline processors: {burst:,} {READINGS}-reading messages at {rate:,.0f} msg/s, run {run + 1}/{repeat}")
        runs.append(
            await pipeline.sustained(
                box,
                credentials,
                devices,
                READINGS,
                600,
                INLINE_ENV,
                rate=rate,
                messages=burst,
                backlog=partial(outbox_backlog, box),
            )
        )
    return runs


async def _paging_at(
    box: Sandbox,
    credentials: Path,
    devices: int,
    probe: Fleet,
    ingest_env: dict[str, str],
    rate: float,
    duration: float,
) -> Paging:
    """Paging probes (20/s) while the load generator offers `rate` 10-reading messages/s to one ingest."""
    pipeline.truncate(box)
    ingest = pipeline.start_ingest(box, ingest_env)
    try:
        await asyncio.sleep(3)
        out = box.state_dir / f"paging-load-{int(rate)}.json"
        load = start_publisher(
            box, credentials, out, devices=devices, rate=rate, duration=duration + 5, readings=READINGS
        )
        paging = await probe_paging(box, probe.devices[0], 20, duration)
        await asyncio.to_thread(load.wait)
    finally:
        await pipeline.stop_ingest(box, ingest)
    return paging


async def _kafka_runs(
    box: Sandbox, credentials: Path, devices: int, repeat: int, burst: int, rate: float, out: dict[str, Any]
) -> None:
    out["kafka"] = []
    for run in range(repeat):
        stream = streams.new_stream(box, f"kafka{run}")
        await streams.create_topic(stream.topic)
        async with streams.supervised(box, stream, PROCESSORS_ENV) as worker:
            assert worker.process is not None
            async with streams.Progress(stream.topic, stream.app_id) as progress:
                ready = await streams.wait_ready(worker.process, progress)
                _say(
                    f"Kafka + Faust processors (worker ready in {ready:.0f} s): {burst:,} {READINGS}-reading"
                    f" messages at {rate:,.0f} msg/s, run {run + 1}/{repeat}"
                )

                async def backlog(progress: streams.Progress = progress) -> int:
                    return await outbox_backlog(box) + await progress.end() - await progress.committed()

                # The worker's CPU is its first process's: a restarted worker's is not counted.
                stage = await pipeline.sustained(
                    box, credentials, devices, READINGS, 600, stream.ingest_env | PROCESSORS_ENV, rate=rate,
                    messages=burst, backlog=backlog, watch_also={"faust worker": worker.process.pid},
                )  # fmt: skip
        stage["worker"] = worker.summary()
        if worker.supervision.died:
            _say(f"the Faust worker died (exit {worker.supervision.exit_status}): see {worker.kept_log}")
        out["kafka"].append(stage)


async def _kafka_paging(
    box: Sandbox, credentials: Path, devices: int, probe: Fleet, rate: float, duration: float
) -> tuple[Paging, dict[str, Any]]:
    """Paging probes through Kafka and a supervised Faust worker; also the worker's summary."""
    stream = streams.new_stream(box, "paging")
    await streams.create_topic(stream.topic)
    async with streams.supervised(box, stream, PROCESSORS_ENV) as worker:
        assert worker.process is not None
        async with streams.Progress(stream.topic, stream.app_id) as progress:
            await streams.wait_ready(worker.process, progress)
        env = stream.ingest_env | PROCESSORS_ENV
        paging = await _paging_at(box, credentials, devices, probe, env, rate, duration)
    return paging, worker.summary()


async def measure(
    box: Sandbox, load: Fleet, credentials: Path, repeat: int, scale: float, offered: float
) -> dict[str, Any]:
    """Inline vs Kafka processors taking a burst of 10-reading messages offered at `offered` msg/s (as fast as
    ingest takes them), then paging latency at 50 % and 90 % of the inline maximum and 50 % of the Kafka one."""
    devices = len(load.devices)
    monitor(box, load)
    probe = box.provision("bench-paging", 1)
    monitor(box, probe)
    duration, burst = 30 * scale, int(10_000 * scale)
    out: dict[str, Any] = {"readings_per_message": READINGS, "offered_messages_per_s": offered, "burst": burst}
    out["paging"], out["paging_samples"], out["paging_skipped"] = {}, {}, {}
    out["inline"] = await _inline_runs(box, credentials, devices, repeat, burst, offered)
    out["inline_max"] = top = median([processed_rate(r) for r in out["inline"]])
    for share in (0.5, 0.9) if _has_maximum(out, "inline", top) else ():
        _say(f"publish->notification latency, inline processors, at {share:.0%} of {top:,.0f} readings/s")
        paging = await _paging_at(box, credentials, devices, probe, INLINE_ENV, share * top / READINGS, duration)
        out["paging"][f"inline {share:.0%}"] = paging_summary(paging)
        out["paging_samples"][f"inline {share:.0%} of max"] = paging.page
    try:
        await streams.check()
    except streams.KafkaUnavailableError as exc:
        out["kafka_skipped"] = str(exc)
        _say(f"Kafka stages skipped: {exc}")
        return out
    try:
        await _kafka_runs(box, credentials, devices, repeat, burst, offered, out)
        out["kafka_max"] = top = median([processed_rate(r) for r in out["kafka"] if not worker_died(r)])
        if _has_maximum(out, "Kafka", top):
            _say(f"publish->notification latency, Kafka + Faust, at 50% of {top:,.0f} readings/s")
            paging, worker = await _kafka_paging(box, credentials, devices, probe, 0.5 * top / READINGS, duration)
            out["paging_worker"] = worker
            if worker["exit_status"] is None:
                out["paging"]["Kafka 50%"] = paging_summary(paging)
                out["paging_samples"]["Kafka 50% of max"] = paging.page
            else:
                out["paging_skipped"]["Kafka"] = f"the Faust worker died (exit {worker['exit_status']})"
    finally:
        deleted = await streams.delete_topics(box)
        logger.info("deleted %d Kafka topics", len(deleted))
    return out


def _has_maximum(out: dict[str, Any], runner: str, top: float) -> bool:
    """A share of no maximum would be offered as rate 0, "as fast as possible": an overload, not a share."""
    if top > 0:
        return True
    out["paging_skipped"][runner] = f"the {runner} processors did not take every reading of a burst, so no maximum"
    _say(f"{runner} paging latency skipped: {out['paging_skipped'][runner]}")
    return False
