"""Fleet mode: N devices publishing at a target rate over MQTT, with live progress and an exact tally.

Two ways to connect: one connection per device, each with the device's own credentials (what a real deployment
sees), or a few multiplexed connections under one identity allowed to publish for every device (the most
messages per second from one process). Either way each device's messages carry `meta.run` and `meta.seq`, so
the run can be reconciled exactly against `vital_readings` (device_simulators.reconcile).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from device_simulators.load import LoadDevice, LoadMessages, load_devices, run_origin
from device_simulators.publisher import Broker, ConnectError, Connection
from device_simulators.tally import Progress, Tally, summary

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """A load run.

    Attributes:
        rate: messages per second over the whole fleet; 0 publishes as fast as the windows allow.
        duration_s: how long to publish (the drain of in-flight messages comes after).
        max_messages: stop after this many messages in total (None: only the duration bounds the run).
        window: unacknowledged publishes allowed per connection.
        connections: multiplexed mode only: how many connections share the devices.
    """

    run_id: str
    rate: float = 0.0
    readings_per_message: int = 1
    duration_s: float = 10.0
    max_messages: int | None = None
    window: int = 1000
    connections: int = 4
    seed: int = 0
    connect_concurrency: int = 100
    drain_timeout_s: float = 30.0
    progress_interval_s: float = 1.0


@dataclass(slots=True)
class _Lane:
    connection: Connection
    devices: list[LoadDevice]
    cap: int | None
    rate: float
    sent: int = 0


@dataclass(slots=True)
class FleetRun:
    plan: FleetPlan
    tally: Tally = field(default_factory=Tally)
    seqs: list[int] = field(default_factory=list)


def _split(total: int | None, weights: Sequence[int]) -> list[int | None]:
    """Splits a message cap over lanes in proportion to their device counts, exactly."""
    if total is None:
        return [None] * len(weights)
    whole = sum(weights)
    caps = [total * w // whole for w in weights]
    for i in range(total - sum(caps)):
        caps[i % len(caps)] += 1
    return list(caps)


async def _drive(
    lane: _Lane,
    run: FleetRun,
    messages: LoadMessages,
    deadline: float,
    stop: asyncio.Event,
    phase: float,
    clock: Callable[[], float],
) -> None:
    """Publishes one lane's messages: at its rate (open loop), or as fast as its window allows."""
    tally, seqs, conn, devices = run.tally, run.seqs, lane.connection, lane.devices
    per_message = messages.readings_per_message
    start = clock() + phase
    tick = 0.002
    while not stop.is_set():
        now = clock()
        if now >= deadline or (lane.cap is not None and lane.sent >= lane.cap):
            return
        if lane.rate > 0:
            due = int((now - start) * lane.rate) + 1 - lane.sent
            if due <= 0:
                await asyncio.sleep(max(tick, (lane.sent - (now - start) * lane.rate) / lane.rate))
                continue
        else:
            due = 1000
        if lane.cap is not None:
            due = min(due, lane.cap - lane.sent)
        for _ in range(due):
            device = devices[lane.sent % len(devices)]
            seq = seqs[device.index] + 1
            payload = messages.payload(seq)
            if not conn.try_publish(device.topic, payload, seq):
                await conn.publish(device.topic, payload, seq)
            seqs[device.index] = seq
            lane.sent += 1
            tally.sent += 1
            tally.readings_sent += per_message
            if stop.is_set() or clock() >= deadline:
                return
        await asyncio.sleep(0)


async def _report(
    run: FleetRun, lanes: list[_Lane], out: TextIO, clock: Callable[[], float], stop: asyncio.Event
) -> None:
    progress = Progress(started=clock())
    while not stop.is_set():
        await asyncio.sleep(run.plan.progress_interval_s)
        print(progress.line(run.tally, clock(), sum(lane.connection.inflight for lane in lanes)), file=out, flush=True)


async def _connect_all(connections: list[Connection], broker: Broker, concurrency: int, tally: Tally) -> list[bool]:
    gate = asyncio.Semaphore(concurrency)

    async def one(conn: Connection) -> bool:
        async with gate:
            try:
                await conn.connect(broker)
            except ConnectError as exc:
                tally.errors += 1
                logger.warning("%s", exc)
                return False
            return True

    return list(await asyncio.gather(*(one(c) for c in connections)))


async def run_fleet(
    plan: FleetPlan,
    serials: Sequence[str],
    broker: Broker,
    *,
    device_passwords: Sequence[str] | None = None,
    multiplex: Identity | None = None,
    stop: asyncio.Event | None = None,
    progress: TextIO | None = sys.stderr,
    clock: Callable[[], float] = time.perf_counter,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Runs a load fleet and returns its result (JSON-ready).

    Pass `device_passwords` (one connection per device, same order as `serials`) or `multiplex` (an identity
    that may publish on every device's topic, over `plan.connections` connections).
    """
    if (device_passwords is None) == (multiplex is None):
        raise ValueError("give either device_passwords or a multiplex identity")
    stop = stop or asyncio.Event()
    devices = load_devices(list(serials))
    run = FleetRun(plan=plan, seqs=[0] * len(devices))
    started_at = now()
    messages = LoadMessages(plan.run_id, plan.readings_per_message, run_origin(started_at), seed=plan.seed)
    groups: list[tuple[Connection, list[LoadDevice]]]
    if device_passwords is not None:
        groups = [
            (Connection(f"{plan.run_id}-{d.serial}", d.serial, pw, on_ack=run.tally.on_ack, window=plan.window), [d])
            for d, pw in zip(devices, device_passwords, strict=True)
        ]
    else:
        assert multiplex is not None
        n = max(1, min(plan.connections, len(devices)))
        groups = [
            (
                Connection(
                    f"{plan.run_id}-mux{i}",
                    multiplex.username,
                    multiplex.password,
                    on_ack=run.tally.on_ack,
                    window=plan.window,
                ),
                devices[i::n],
            )
            for i in range(n)
        ]
    caps = _split(plan.max_messages, [len(g[1]) for g in groups])
    lanes = [
        _Lane(conn, devs, cap, plan.rate * len(devs) / len(devices))
        for (conn, devs), cap in zip(groups, caps, strict=True)
    ]
    connect_started = clock()
    ok = await _connect_all([lane.connection for lane in lanes], broker, plan.connect_concurrency, run.tally)
    connect_s = clock() - connect_started
    live = [lane for lane, up in zip(lanes, ok, strict=True) if up]
    rng = random.Random(plan.seed)
    publish_started = clock()
    deadline = publish_started + plan.duration_s
    done = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tasks:
            if progress is not None:
                reporter = tasks.create_task(_report(run, live, progress, clock, done), name="fleet-progress")
            async with asyncio.TaskGroup() as drivers:
                for i, lane in enumerate(live):
                    phase = rng.random() / lane.rate if lane.rate > 0 else 0.0
                    drivers.create_task(_drive(lane, run, messages, deadline, stop, phase, clock), name=f"lane-{i}")
            publish_s = clock() - publish_started
            drained = await asyncio.gather(*(lane.connection.drain(plan.drain_timeout_s) for lane in live))
            done.set()
            if progress is not None:
                reporter.cancel()
    finally:
        await asyncio.gather(*(lane.connection.close() for lane in live))
    unacked = sum(lane.connection.inflight for lane in live)
    result: dict[str, Any] = {
        "run_id": plan.run_id,
        "mode": "per-device" if device_passwords is not None else "multiplexed",
        "devices": len(devices),
        "connections": len(lanes),
        "connected": len(live),
        "connect_s": round(connect_s, 3),
        "readings_per_message": plan.readings_per_message,
        "target_rate": plan.rate,
        "window": plan.window,
        "seed": plan.seed,
        "started_at": started_at.isoformat(),
        "origin": messages.origin.isoformat(),
        "elapsed_s": round(publish_s, 3),
        "sent": run.tally.sent,
        "readings_sent": run.tally.readings_sent,
        "acked": run.tally.acked,
        "refused": run.tally.refused,
        "unacked": unacked,
        "drained": all(drained),
        "errors": run.tally.errors,
        "sent_per_s": run.tally.sent / publish_s if publish_s > 0 else 0.0,
        "acked_per_s": run.tally.acked / publish_s if publish_s > 0 else 0.0,
        "reason_codes": {f"0x{code:02x}": n for code, n in sorted(run.tally.reasons.items())},
        "ack_latency_ms": run.tally.latency_ms(),
        "ack_latency_sample_s": run.tally.latency_sample(1000),
        "last_seq": {d.serial: run.seqs[d.index] for d in devices},
    }
    if progress is not None:
        print(summary(result), file=progress, flush=True)
    return result
