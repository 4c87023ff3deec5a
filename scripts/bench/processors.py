"""The processors on their own: the pure engine, the inline runner, the Faust runner against a bare aiokafka
consumer reading the same topic, and publish->notification latency at half of the measured maximum.

    .venv/bin/python -m scripts.bench.processors [--patients 200] [--events 20000] [--latency-s 20] [--json FILE]

Runs in a throw-away sandbox (scripts.bench.sandbox: a fresh database with every migration, topics named after
it). Each part gets patients of its own (the runners remember what they judged). Every patient is monitored with
the heart-rate requirement of scripts.bench.clinic; values are mostly in range with a share of breaches, each of
which opens an episode (and pages) and the next normal value clears it, so the outputs are realistic: episodes,
notifications, states. End-to-end numbers with ingest in front are scripts/bench/handoff.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from processors.batch import run_batch
from processors.codec import dump_state, load_state
from processors.contexts import ContextCache, load_contexts, load_symptom_rules
from processors.engine import evaluate
from processors.events import CommittedReading, Event, decode_event, encode_event
from processors.inline import InlineProcessor
from processors.settings import ProcessorSettings
from processors.state import PatientState
from scripts.bench import clinic, streams
from scripts.bench.sandbox import Sandbox, sandbox

BREACH_SHARE = 0.05
DELIVER_BATCH = 500


def _say(text: str) -> None:
    print(f"[processors bench] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Patient:
    organization_id: uuid.UUID
    patient_id: uuid.UUID
    device_id: uuid.UUID


def patients(box: Sandbox, prefix: str, count: int) -> list[Patient]:
    fleet = box.provision(prefix, count)
    clinic.monitor(box, fleet)
    serials = [d.serial for d in fleet.devices]
    with box.admin() as conn:
        rows = conn.execute(
            "SELECT d.organization_id, a.patient_id, d.id FROM devices d"
            " JOIN device_assignments a ON a.device_id = d.id WHERE d.serial = ANY(%s) ORDER BY d.serial",
            (serials,),
        ).fetchall()
    return [Patient(*row) for row in rows]


def events(
    group: Sequence[Patient], count: int, *, start: datetime | None = None, seed: int = 7
) -> list[CommittedReading]:
    """`count` heart-rate readings round-robin over the patients, one second apart per patient."""
    rng = random.Random(seed)
    start = start or datetime.now(UTC) - timedelta(hours=1)
    result = []
    for i in range(count):
        p = group[i % len(group)]
        measured = start + timedelta(seconds=i // len(group))
        value = clinic.BREACH_VALUE if rng.random() < BREACH_SHARE else rng.uniform(55, 99)
        result.append(
            CommittedReading(
                reading_id=uuid.uuid4(), organization_id=p.organization_id, patient_id=p.patient_id,
                device_id=p.device_id, vital_type="heart_rate", vital_type_id=1, value=round(value),
                unit="/min", measured_at=measured, received_at=measured + timedelta(milliseconds=300),
            )
        )  # fmt: skip
    return result


def settings_for(box: Sandbox) -> ProcessorSettings:
    return ProcessorSettings(postgres_db=box.database, processor_tick_interval_s=0)


async def pool_for(box: Sandbox) -> asyncpg.Pool:
    return await asyncpg.create_pool(settings_for(box).database_url(), min_size=1, max_size=4)


async def engine_rate(box: Sandbox, group: Sequence[Patient], batch: list[CommittedReading]) -> dict[str, Any]:
    """The pure engine alone (contexts loaded once): events/s and the size of a serialised state."""
    pool = await pool_for(box)
    try:
        async with pool.acquire() as conn:
            rules = await load_symptom_rules(conn)
            contexts = await load_contexts(conn, [p.patient_id for p in group], rules)
    finally:
        await pool.close()
    config = settings_for(box).engine()
    states: dict[uuid.UUID, PatientState | None] = {}
    outputs = 0
    started = time.perf_counter()
    for event in batch:
        result = evaluate(states.get(event.patient_id), event, contexts[event.patient_id], config)
        states[event.patient_id] = result.state
        outputs += len(result.outputs)
    seconds = time.perf_counter() - started
    sizes = [len(dump_state(s)) for s in states.values() if s is not None]
    return {
        "events": len(batch),
        "outputs": outputs,
        "events_per_s": round(len(batch) / seconds),
        "state_bytes_median": int(statistics.median(sizes)),
    }


async def batch_profile(
    box: Sandbox, group: Sequence[Patient], batch: list[CommittedReading], size: int
) -> dict[str, Any]:
    """The Faust runner's work per batch, in-process (without Faust itself): decode each record (events codec),
    take each patient's state (decoded only if the table holds another value than the worker wrote), run the batch
    step (`processors.batch.run_batch`: one transaction), keep the new states' bytes. Counts the statements sent
    to PostgreSQL per batch (asyncpg's query logger: every statement is at least one round trip), and splits the
    time into this process's CPU and the rest (waiting for PostgreSQL)."""
    pool = await pool_for(box)
    contexts = ContextCache(ttl=300)
    config = settings_for(box).engine()
    table: dict[uuid.UUID, bytes] = {}
    decoded: dict[uuid.UUID, tuple[bytes, PatientState]] = {}
    statements: list[tuple[str, float]] = []
    records = [(str(e.patient_id).encode(), encode_event(e)) for e in batch]
    warm = len(group)  # every patient's first event builds its state from the tables: not measured

    async def step(chunk: Sequence[tuple[bytes, bytes]], conn: Any) -> None:
        by_patient: dict[uuid.UUID, list[Event]] = {}
        for key, value in chunk:
            by_patient.setdefault(uuid.UUID(key.decode()), []).append(decode_event(value))
        # As the worker: a table value it wrote itself is not decoded again.
        cached = {
            p: (decoded[p][1] if p in decoded else load_state(table[p]) if p in table else None) for p in by_patient
        }
        result = await run_batch(conn, by_patient, cached, contexts, config)
        for patient_id, state in result.states.items():
            table[patient_id] = result.encoded[patient_id]
            decoded[patient_id] = (table[patient_id], state)

    try:
        async with pool.acquire() as conn:
            await step(records[:warm], conn)
            conn.add_query_logger(lambda record: statements.append((record.query, record.elapsed)))
            wall = cpu = 0.0
            batches = 0
            for start in range(warm, len(records), size):
                t0, c0 = time.perf_counter(), time.process_time()
                await step(records[start : start + size], conn)
                wall += time.perf_counter() - t0
                cpu += time.process_time() - c0
                batches += 1
    finally:
        await pool.close()
    measured = len(records) - warm
    kinds: dict[str, list[float]] = {}
    for query, elapsed in statements:
        head = " ".join(query.split())[:60]
        kinds.setdefault(head, []).append(elapsed)
    return {
        "events": measured,
        "batch": size,
        "batches": batches,
        "statements_per_batch": round(len(statements) / batches, 2),
        "us_per_event": round(1e6 * wall / measured, 1),
        "cpu_us_per_event": round(1e6 * cpu / measured, 1),
        "events_per_s": round(measured / wall),
        # statement: (how many per batch, ms per batch)
        "statements": {
            k: (round(len(v) / batches, 2), round(1000 * sum(v) / batches, 2))
            for k, v in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))
        },
    }


async def inline_rate(box: Sandbox, batch: list[CommittedReading]) -> dict[str, Any]:
    """InlineProcessor.deliver in batches of DELIVER_BATCH, as ingest's relay calls it: events/s to commit."""
    pool = await pool_for(box)
    try:
        processor = InlineProcessor(pool, settings_for(box).engine())
        started = time.perf_counter()
        for start in range(0, len(batch), DELIVER_BATCH):
            await processor.deliver(batch[start : start + DELIVER_BATCH])
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return {"events": len(batch), "batch": DELIVER_BATCH, "events_per_s": round(len(batch) / seconds)}


async def produce(topic: str, batch: Sequence[CommittedReading]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=streams.BOOTSTRAP, acks="all", linger_ms=10)
    await producer.start()
    try:
        sent = [await producer.send(topic, key=str(e.patient_id).encode(), value=encode_event(e)) for e in batch]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def faust_vs_bare(box: Sandbox, batch: list[CommittedReading]) -> dict[str, Any]:
    stream = streams.new_stream(box, "procbench")
    await streams.create_topic(stream.topic)
    await produce(stream.topic, batch)
    bare = await streams.bare_read(stream.topic, len(batch), f"{stream.app_id}-bare")
    decoded = await streams.bare_read(stream.topic, len(batch), f"{stream.app_id}-decoded", decode=True)
    faust = await streams.faust_read(box, stream, len(batch), {"PROCESSOR_TICK_INTERVAL_S": "0"})
    # Faust alone: another group of the same topic, same take/decode/acks, no evaluation, database or table.
    consume_only = streams.Stream(stream.topic, f"{stream.app_id}-consume")
    faust_alone = await streams.faust_read(box, consume_only, len(batch), {}, consume_only=True)

    def over(baseline: dict[str, Any]) -> float:
        rate = baseline["records_per_s"]
        return round(faust.get("records_per_s", 0.0) / rate, 3) if rate else 0.0

    # The ratio is against the decoding reader: both sides then consume (read and decode) every record.
    return {
        "bare": bare,
        "bare_decoded": decoded,
        "faust": faust,
        "faust_consume_only": faust_alone,
        "faust_consume_only_over_bare_decoded": round(
            faust_alone.get("records_per_s", 0.0) / decoded["records_per_s"], 3
        )
        if decoded["records_per_s"]
        else 0.0,
        "faust_over_bare": over(bare),
        "faust_over_bare_decoded": over(decoded),
    }


def probes(group: Sequence[Patient], count: int) -> list[CommittedReading]:
    """The throughput workload (the same share of breaches), measured from now on: the breaches page."""
    return events(group, count, start=datetime.now(UTC), seed=11)


def warm_up(group: Sequence[Patient]) -> list[CommittedReading]:
    """One in-range reading per patient, a minute before the probes."""
    at = datetime.now(UTC) - timedelta(minutes=1)
    return [
        CommittedReading(
            reading_id=uuid.uuid4(), organization_id=p.organization_id, patient_id=p.patient_id,
            device_id=p.device_id, vital_type="heart_rate", vital_type_id=1, value=clinic.NORMAL_VALUE,
            unit="/min", measured_at=at, received_at=at,
        )
        for p in group
    ]  # fmt: skip


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"count": len(values), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)}


async def watch_notifications(
    box: Sandbox,
    group: Sequence[Patient],
    sent: dict[str, float],
    seen: dict[str, float],
    all_seen: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Records when each probe's page becomes visible (polled every 20 ms): only the pages of the group's nurse
    created during the run, through the recipient index. (Reading every recent page of the sandbox at each poll
    cost the box more CPU with every probe, and that CPU came out of the processors being measured.)"""
    conn = await asyncpg.connect(settings_for(box).database_url())
    try:
        nurse = await conn.fetchval(
            "SELECT h.user_id FROM patient_provider_assignments a"
            " JOIN healthcare_providers h ON h.id = a.provider_id WHERE a.patient_id = $1 LIMIT 1",
            group[0].patient_id,
        )
        since = datetime.now(UTC) - timedelta(minutes=1)
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT payload ->> 'reading_id' AS reading FROM notifications"
                " WHERE recipient_user_id = $1 AND created_at > $2 AND type = 'vital_alert'",
                nurse,
                since,
            )
            now = time.perf_counter()
            for row in rows:
                if row["reading"] in sent and row["reading"] not in seen:
                    seen[row["reading"]] = now
            if sent and len(seen) >= len(sent):
                all_seen.set()
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def kafka_latency(box: Sandbox, group: Sequence[Patient], rate: float, seconds: float) -> dict[str, Any]:
    """Publish->notification through Kafka and a Faust worker, offered at `rate` events/s."""
    stream = streams.new_stream(box, "proclatency")
    await streams.create_topic(stream.topic)
    # The worker's own take window (PROCESSOR_BATCH_WITHIN_S): this used to force 0.02 s, which made it slower.
    worker = streams.start_faust(box, stream, {"PROCESSOR_TICK_INTERVAL_S": "0"})
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop, all_seen = asyncio.Event(), asyncio.Event()
    try:
        async with streams.Progress(stream.topic, stream.app_id) as progress:
            await streams.wait_ready(worker, progress)
            # Warm-up, not measured: every patient's state is built (from the tables) on its first event.
            await produce(stream.topic, warm_up(group))
            while await progress.committed() < len(group):  # noqa: ASYNC110 - polls Kafka
                await asyncio.sleep(0.25)
        batch = probes(group, int(rate * seconds))
        watcher = asyncio.create_task(watch_notifications(box, group, sent, seen, all_seen, stop))
        producer = AIOKafkaProducer(bootstrap_servers=streams.BOOTSTRAP, acks="all", linger_ms=1)
        await producer.start()
        try:
            started = time.perf_counter()
            for i, event in enumerate(batch):
                due = started + i / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                if event.value == clinic.BREACH_VALUE:
                    sent[str(event.reading_id)] = time.perf_counter()
                await producer.send(stream.topic, key=str(event.patient_id).encode(), value=encode_event(event))
            await producer.flush()
        finally:
            await producer.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), 30)
        stop.set()
        await watcher
    finally:
        await streams.stop_faust(worker)
    latencies = [seen[r] - sent[r] for r in sent if r in seen]
    return {
        "offered_per_s": round(rate),
        "pages_expected": len(sent),
        "paged_at_end": await paged(box, group, sent),
        **_percentiles(latencies),
    }


async def paged(box: Sandbox, group: Sequence[Patient], sent: dict[str, float]) -> int:
    """How many of the probes' readings have a page in the database (after the run: the watcher's count can only be
    lower)."""
    conn = await asyncpg.connect(settings_for(box).database_url())
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT payload ->> 'reading_id' AS reading FROM notifications"
            " WHERE patient_id = ANY($1::uuid[]) AND type = 'vital_alert'",
            [p.patient_id for p in group],
        )
    finally:
        await conn.close()
    return sum(1 for r in rows if r["reading"] in sent)


async def inline_latency(box: Sandbox, group: Sequence[Patient], rate: float, seconds: float) -> dict[str, Any]:
    """Event handed to the relay's queue -> notification committed, inline, offered at `rate` events/s (the relay
    takes up to DELIVER_BATCH events or what arrived within 20 ms)."""
    pool = await pool_for(box)
    queue: asyncio.Queue[tuple[float, CommittedReading]] = asyncio.Queue(maxsize=10_000)
    latencies: list[float] = []
    batch = probes(group, int(rate * seconds))
    try:
        processor = InlineProcessor(pool, settings_for(box).engine())
        await processor.deliver(warm_up(group))  # not measured: every patient's state is built on its first event

        async def relay() -> None:
            """Like an outbox relay: takes everything committed so far (up to DELIVER_BATCH) at once."""
            done = 0
            while done < len(batch):
                items = [await queue.get()]
                while len(items) < DELIVER_BATCH and not queue.empty():
                    items.append(queue.get_nowait())
                await processor.deliver([e for _, e in items])
                now = time.perf_counter()
                latencies.extend(now - t for t, e in items if e.value == clinic.BREACH_VALUE)
                done += len(items)

        task = asyncio.create_task(relay())
        started = time.perf_counter()
        for i, event in enumerate(batch):
            due = started + i / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            await queue.put((time.perf_counter(), event))
        await task
    finally:
        await pool.close()
    return {"offered_per_s": round(rate), **_percentiles(latencies)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    await streams.check()
    result: dict[str, Any] = {"patients": args.patients, "events": args.events, "breach_share": BREACH_SHARE}
    with sandbox() as box:
        if args.profile:
            result["batch_profile"] = []
            for size in args.profile:
                group = patients(box, f"procbench-profile{size}", args.patients)
                result["batch_profile"].append(await batch_profile(box, group, events(group, args.events), size))
                _say(f"profile: {result['batch_profile'][-1]}")
            return result
        try:
            _say(f"sandbox {box.database}: provisioning {args.patients} patients per part")
            engine_group = patients(box, "procbench-engine", args.patients)
            inline_group = patients(box, "procbench-inline", args.patients)
            faust_group = patients(box, "procbench-faust", args.patients)

            _say("pure engine")
            result["engine"] = await engine_rate(box, engine_group, events(engine_group, args.events))
            _say(f"engine: {result['engine']}")
            _say("inline runner")
            result["inline"] = await inline_rate(box, events(inline_group, args.events))
            _say(f"inline: {result['inline']}")
            _say("Faust worker against a bare aiokafka consumer, same topic")
            result["kafka"] = await faust_vs_bare(box, events(faust_group, args.events))
            _say(f"kafka: {result['kafka']}")

            # Latency at fractions of the maximum measured above (the first is the "half of max").
            faust_max = result["kafka"]["faust"].get("records_per_s", 0.0)
            result["kafka_latency"] = []
            for i, fraction in enumerate((0.5, 0.2) if faust_max else ()):
                _say(f"publish->notification via Kafka at {fraction:.0%} of {faust_max:,.0f}/s")
                group = patients(box, f"procbench-klat{i}", args.patients)
                run = await kafka_latency(box, group, faust_max * fraction, args.latency_s)
                result["kafka_latency"].append({"fraction": fraction, **run})
                _say(f"kafka latency: {run}")
            inline_max = result["inline"]["events_per_s"]
            result["inline_latency"] = []
            for i, fraction in enumerate((0.5, 0.25, 0.1)):
                _say(f"relay->notification inline at {fraction:.0%} of {inline_max:,.0f}/s")
                group = patients(box, f"procbench-ilat{i}", args.patients)
                run = await inline_latency(box, group, inline_max * fraction, args.latency_s)
                result["inline_latency"].append({"fraction": fraction, **run})
                _say(f"inline latency: {run}")
        finally:
            removed = await streams.delete_topics(box)
            _say(f"removed {len(removed)} topics")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument(
        "--profile", type=int, nargs="*", metavar="BATCH",
        help="only the per-batch profile of the batch step, at these batch sizes (default 50 500)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.profile == []:
        args.profile = [50, 500]
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
