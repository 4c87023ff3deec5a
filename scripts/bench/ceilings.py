"""Ceilings: what PostgreSQL and the broker can do at best on this box, for the pipeline to be compared with.

- COPY (asyncpg, binary) of the same readings rows into an unindexed, logged copy of `vital_readings`, and into
  the real table's day partition (primary key + patient index), one transaction per batch, synchronous_commit on.
- Raw MQTT delivery: how many QoS 1 messages a subscriber receives per second from the broker (no database).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import gmqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ingest.writer import COLUMNS
from scripts.bench.sandbox import Sandbox


def readings_rows(count: int, devices: int, start: datetime, seed: int = 0) -> list[tuple[Any, ...]]:
    """Rows shaped like ingest's: UUIDv7-like ids, one heart-rate reading per ms per device, small metadata."""
    rng = random.Random(seed)
    org = uuid.UUID(int=rng.getrandbits(128))
    device_ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(devices)]
    patient_ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(devices)]
    now = datetime.now(UTC)
    rows = []
    for i in range(count):
        d = i % devices
        value = float(rng.randint(55, 99))
        millis = int(now.timestamp() * 1000) + i
        rid = uuid.UUID(int=(millis << 80) | (0x7 << 76) | rng.getrandbits(76) & ~(0xF << 76))
        rows.append(
            (
                rid,
                org,
                patient_ids[d],
                device_ids[d],
                1,
                value,
                value,
                "/min",
                start + timedelta(milliseconds=i // devices),
                now,
                f"m{i}",
                json.dumps({"meta": {"seq": i}}),
            )
        )
    return rows


async def _jsonb(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda t: b"\x01" + t.encode(),
        decoder=lambda d: d[1:].decode(),
        schema="pg_catalog",
        format="binary",
    )


async def copy_rate(box: Sandbox, table: str, rows: list[tuple[Any, ...]], batch: int) -> float:
    """Rows/s of COPY into `table`, one committed transaction per batch, as the owner."""
    conn = await box.connect(owner=True)
    try:
        await _jsonb(conn)
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            async with conn.transaction():
                await conn.copy_records_to_table(table, records=rows[i : i + batch], columns=COLUMNS)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


def prepare_unindexed(box: Sandbox) -> str:
    with box.admin() as conn:
        conn.execute("CREATE TABLE bench_raw_readings (LIKE vital_readings INCLUDING DEFAULTS)")
    return "bench_raw_readings"


async def copy_ceilings(box: Sandbox, rows_per_run: int, batch: int, run: int) -> dict[str, float]:
    """One repetition of both COPY ceilings with fresh identities (each run writes new measured_at ranges)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = readings_rows(rows_per_run, 1000, today + timedelta(hours=run), seed=run)
    # COPY cannot go through the row-level security of the parent table, so the real table is measured at its
    # day partition: the same heap, primary key and patient index, without RLS and partition routing.
    return {
        "copy_unindexed": await copy_rate(box, "bench_raw_readings", rows, batch),
        "copy_vital_readings": await copy_rate(box, f"vital_readings_{today:%Y%m%d}", rows, batch),
    }


class _Counter:
    def __init__(self, expected: int) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.expected = expected
        self.done = threading.Event()

    def hit(self) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.expected:
            self.done.set()

    def rate(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.count > 1 else 0.0


async def gmqtt_receive(box: Sandbox, expected: int, publish: Any, limit_s: float = 120) -> float:
    """Messages/s that a gmqtt QoS 1 subscriber (the ingest service user) receives while `publish()` runs."""
    counter = _Counter(expected)
    client = gmqtt.Client(f"bench-sub-{uuid.uuid4().hex[:8]}", receive_maximum=65535)
    client.set_auth_credentials(box.ingest.mqtt_ingest_user, box.ingest.mqtt_ingest_password.get_secret_value())

    def on_message(*_: Any) -> int:
        counter.hit()
        return 0

    client.on_message = on_message
    await client.connect(box.broker.host, box.broker.port, version=gmqtt.constants.MQTTv50)
    client.subscribe("devices/+/readings", qos=1)
    await asyncio.sleep(0.5)
    proc = publish()
    try:
        await asyncio.to_thread(counter.done.wait, limit_s)
    finally:
        await client.disconnect()
        proc.wait()
    return counter.rate()


def paho_receive(box: Sandbox, expected: int, publish: Any, limit_s: float = 120) -> float:
    """The same with a paho-mqtt subscriber (its network loop in a thread)."""
    counter = _Counter(expected)
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-paho-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
    )
    client.username_pw_set(box.ingest.mqtt_ingest_user, box.ingest.mqtt_ingest_password.get_secret_value())
    client.on_message = lambda *_: counter.hit()
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(box.broker.host, box.broker.port)
    client.loop_start()
    try:
        client.subscribe("devices/+/readings", qos=1)
        subscribed.wait(5)
        proc = publish()
        counter.done.wait(limit_s)
        proc.wait()
    finally:
        client.disconnect()
        client.loop_stop()
    return counter.rate()
