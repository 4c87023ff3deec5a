"""Delivery guarantees end to end: ack after commit across kill -9, backpressure while PostgreSQL stalls or is
unreachable, the outbox across a crash between commit and hand-off, a shared subscription with a member killed,
and graceful shutdown. Ingest runs as a real subprocess; PostgreSQL is disturbed only through a private proxy."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import psycopg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from ingest.settings import IngestSettings
from tests.conftest import MqttDeviceFactory
from tests.factories import Device, Patient
from tests.ingest.harness import IngestProcess, Publisher, TcpProxy, eventually, free_port, message, publish, reading

Start = Callable[..., IngestProcess]


def messages(count: int, *, start: int = 0, prefix: str = "m") -> list[bytes]:
    base = datetime.now(UTC) - timedelta(hours=1)
    return [
        message(f"{prefix}-{i}", reading(60 + i % 40, at=base + timedelta(milliseconds=10 * i)), meta={"seq": i})
        for i in range(start, start + count)
    ]


def stored(db: psycopg.Connection[Any], *devices: Device) -> int:
    row = db.execute(
        "SELECT count(*) FROM vital_readings WHERE device_id = ANY(%s)", ([d.id for d in devices],)
    ).fetchone()
    assert row is not None
    return int(row[0])


def seqs(db: psycopg.Connection[Any], device: Device) -> list[int]:
    rows = db.execute(
        "SELECT (metadata->'meta'->>'seq')::int FROM vital_readings WHERE device_id = %s ORDER BY 1", (device.id,)
    ).fetchall()
    return [r[0] for r in rows]


async def test_a_message_killed_between_receive_and_commit_is_stored_once_after_redelivery(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    device = mqtt_device(assign_to=patient)
    proxy = await TcpProxy(ingest_settings.postgres_host, ingest_settings.postgres_port).start()
    try:
        first = await ingest_process([device.serial], postgres_port=proxy.port).ready()
        proxy.pause()  # received, but no commit can happen
        await publish(ingest_settings, device.serial, device.password, messages(50))
        await eventually(lambda: True, 0.1)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await first.metric("ingest_messages_received_total", kind="readings") < 50:
            assert loop.time() < deadline, "ingest did not receive the messages"
            await asyncio.sleep(0.1)
        assert await first.metric("ingest_acks_total") == 0
        first.kill()
        proxy.resume()
        second = await ingest_process([device.serial], client_id=first.client_id, postgres_port=proxy.port).ready()
        await eventually(lambda: stored(db, device) == 50, what="50 readings after redelivery")
        await asyncio.sleep(1.0)
        assert seqs(db, device) == list(range(50))
        assert await second.metric("ingest_acks_total") >= 50
    finally:
        await proxy.close()


async def test_backpressure_while_the_database_stalls_and_is_unreachable(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    device = mqtt_device(assign_to=patient)
    proxy = await TcpProxy(ingest_settings.postgres_host, ingest_settings.postgres_port).start()
    try:
        ingest = await ingest_process(
            [device.serial], postgres_port=proxy.port, ingest_mqtt_receive_maximum=200, ingest_queue_max=100
        ).ready()
        assert ingest.proc is not None
        process = psutil.Process(ingest.proc.pid)
        proxy.pause()
        await publish(ingest_settings, device.serial, device.password, messages(2000))
        await asyncio.sleep(3.0)
        # The broker holds what is beyond our Receive Maximum; nothing is acknowledged; memory stays flat.
        assert await ingest.metric("ingest_messages_received_total", kind="readings") == 200
        assert await ingest.metric("ingest_acks_total") == 0
        status, _ = await ingest.get("/readyz")
        assert status == 503
        rss = process.memory_info().rss
        await asyncio.sleep(2.0)
        assert process.memory_info().rss < rss + 5 * 1024 * 1024
        assert await ingest.metric("ingest_messages_received_total", kind="readings") == 200
        proxy.resume()
        await eventually(lambda: stored(db, device) == 2000, what="2000 readings after the stall")
        assert seqs(db, device) == list(range(2000))

        # Unreachable: connections dropped and refused; ingest retries with backoff and resumes by itself.
        await proxy.refuse()
        await publish(ingest_settings, device.serial, device.password, messages(300, start=2000))
        await asyncio.sleep(3.0)
        assert stored(db, device) < 2300 or await ingest.metric("ingest_acks_total") <= 2000
        await proxy.start()
        await eventually(lambda: stored(db, device) == 2300, what="2300 readings after the outage")
        assert await ingest.metric("ingest_db_errors_total", kind="retriable") > 0
        assert ingest.proc.poll() is None
    finally:
        await proxy.close()


async def test_a_crash_between_commit_and_hand_off_still_hands_the_readings_off(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    device = mqtt_device(assign_to=patient)
    topic = f"test-readings-{secrets.token_hex(4)}"
    dead_kafka = f"127.0.0.1:{free_port()}"
    first = await ingest_process(
        [device.serial], processor_transport="kafka", kafka_readings_topic=topic, kafka_bootstrap_servers=dead_kafka
    ).ready()
    await publish(ingest_settings, device.serial, device.password, messages(5))
    await eventually(lambda: stored(db, device) == 5)

    def outbox() -> int:
        row = db.execute(
            "SELECT coalesce(sum(cardinality(device_ids)), 0) FROM ingest_outbox WHERE destination = %s",
            (f"kafka:{topic}",),
        ).fetchone()
        assert row is not None
        return int(row[0])

    assert outbox() == 5  # committed, not handed off (Kafka is unreachable)
    first.kill()
    second = await ingest_process(
        [device.serial], client_id=first.client_id, processor_transport="kafka", kafka_readings_topic=topic
    ).ready()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=ingest_settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        group_id=f"test-{topic}",
        metadata_max_age_ms=500,
    )
    await consumer.start()
    try:
        events: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(events) < 5 and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    assert record.key == str(patient.id).encode()
                    events.append(json.loads(record.value))
    finally:
        await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=ingest_settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    ids = {str(r[0]) for r in db.execute("SELECT id FROM vital_readings WHERE device_id = %s", (device.id,))}
    assert {e["reading_id"] for e in events} == ids, second.log[-4000:]
    assert {e["vital_type"] for e in events} == {"heart_rate"}
    await eventually(lambda: outbox() == 0, what="outbox drained")
    assert await second.metric("ingest_handoff_events_total", path="recovery") == 5


async def test_two_processes_share_the_subscription_and_lose_nothing_when_one_is_killed(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    devices = [mqtt_device(assign_to=patient) for _ in range(3)]
    serials = [d.serial for d in devices]
    # Scale-out names its share group explicitly: the default is a plain subscription (one process).
    a = await ingest_process(serials, ingest_mqtt_share_group="ingest").ready()
    b = await ingest_process(serials, ingest_mqtt_share_group="ingest").ready()
    for d in devices:
        await publish(ingest_settings, d.serial, d.password, messages(200))
    await eventually(lambda: stored(db, *devices) == 600, what="first 600")
    received_a = await a.metric("ingest_messages_received_total", kind="readings")
    received_b = await b.metric("ingest_messages_received_total", kind="readings")
    assert received_a > 0
    assert received_b > 0
    assert received_a + received_b == 600

    b.kill()
    for d in devices:
        await publish(ingest_settings, d.serial, d.password, messages(200, start=200))
    await asyncio.sleep(3.0)
    # Mosquitto keeps routing a share of the messages to the dead member's persistent session, queued for it.
    held_for_b = 1200 - stored(db, *devices)
    b2 = await ingest_process(serials, client_id=b.client_id, ingest_mqtt_share_group="ingest").ready()
    await eventually(lambda: stored(db, *devices) == 1200, what="all 1200 after the member came back")
    for d in devices:
        assert seqs(db, d) == list(range(400))
    assert await b2.metric("ingest_messages_received_total", kind="readings") >= held_for_b
    print(f"messages queued for the killed member until it returned: {held_for_b}")


async def test_sigterm_stops_flushes_acknowledges_and_exits_within_the_grace_period(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    device = mqtt_device(assign_to=patient)
    ingest = await ingest_process([device.serial], ingest_shutdown_grace_s=5).ready()
    payloads = messages(3000)
    done = threading.Event()

    def load() -> None:
        with Publisher(ingest_settings, device.serial, device.password) as publisher:
            for i in range(0, len(payloads), 100):
                publisher.publish(payloads[i : i + 100])
        done.set()

    sender = asyncio.create_task(asyncio.to_thread(load))
    await eventually(lambda: stored(db, device) >= 500, what="load under way")
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await asyncio.to_thread(ingest.terminate, 20.0)
    elapsed = loop.time() - started
    assert code == 0
    assert elapsed < 5 + 2
    await sender
    assert done.is_set()
    restarted = await ingest_process([device.serial], client_id=ingest.client_id).ready()
    await eventually(lambda: stored(db, device) == 3000, what="every message after the restart")
    assert seqs(db, device) == list(range(3000))
    assert restarted.proc is not None


async def test_a_lost_broker_connection_is_restored_with_backoff_and_nothing_is_lost(
    db: psycopg.Connection[Any],
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_process: Start,
) -> None:
    device = mqtt_device(assign_to=patient)
    proxy = await TcpProxy(ingest_settings.mqtt_host, ingest_settings.mqtt_port).start()
    try:
        ingest = await ingest_process([device.serial], mqtt_port=proxy.port, ingest_reconnect_max_s=1).ready()
        await publish(ingest_settings, device.serial, device.password, messages(100))
        await eventually(lambda: stored(db, device) == 100)
        await proxy.refuse()  # the connection drops and reconnects are refused
        await publish(ingest_settings, device.serial, device.password, messages(200, start=100))
        await asyncio.sleep(2.0)
        assert (await ingest.get("/readyz"))[0] == 503
        await proxy.start()
        await eventually(lambda: stored(db, device) == 300, what="the queued 200 after reconnecting")
        assert seqs(db, device) == list(range(300))
        assert await ingest.metric("ingest_mqtt_reconnects_total") >= 2
        assert (await ingest.get("/readyz"))[0] == 200
    finally:
        await proxy.close()
