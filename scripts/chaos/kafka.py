"""Faults on the Kafka path: kill -9 the Faust worker, restart the Kafka broker; count alerts and notifications.

Every patient of the fleet gets exactly one critical heart-rate reading (150 /min against critical_high 140), sent
in three waves: before the worker is killed, while it is down, and around the Kafka restart. Exactly one alert
episode and one `vital_alert` notification to the patient's nurse must come of each, whatever was redelivered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from device_simulators.credentials import DeviceCredential
from device_simulators.publisher import Connection
from scripts.chaos.scenarios import Env, Load, Row, _finish
from scripts.chaos.service import faust_worker, ingest


async def _alerts(env: Env, devices: list[DeviceCredential]) -> None:
    """One critical reading per device, acknowledged by the broker before this returns."""
    at = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()
    for device in devices:
        conn = Connection(f"alert-{secrets.token_hex(3)}", device.serial, device.password, on_ack=lambda *_: None)
        await conn.connect(env.fleet.broker)
        payload = json.dumps(
            {
                "message_id": f"alert-{device.serial}",
                "readings": [{"type": "heart_rate", "value": 150, "unit": "/min", "measured_at": at}],
            }
        ).encode()
        await conn.publish(f"devices/{device.serial}/readings", payload, 1)
        await conn.drain(30)
        await conn.close()


def _count(env: Env) -> tuple[int, int, int, int]:
    """(patients, with exactly one open critical episode, vital_alert notifications, distinct (patient, nurse))."""
    serials = env.serials
    with env.stack.connect() as conn:
        row = conn.execute(
            """
            WITH fleet AS (SELECT da.patient_id FROM devices d JOIN device_assignments da ON da.device_id = d.id
                            WHERE d.serial = ANY(%s)),
                 episodes AS (SELECT a.patient_id, count(*) AS n FROM vital_alerts a
                               WHERE a.patient_id IN (SELECT patient_id FROM fleet) AND a.severity = 'critical'
                                 AND NOT a.retrospective GROUP BY 1),
                 notes AS (SELECT n.patient_id, n.recipient_user_id FROM notifications n
                            WHERE n.patient_id IN (SELECT patient_id FROM fleet) AND n.type = 'vital_alert')
            SELECT (SELECT count(*) FROM fleet),
                   (SELECT count(*) FROM episodes WHERE n = 1),
                   (SELECT count(*) FROM notes),
                   (SELECT count(DISTINCT (patient_id, recipient_user_id)) FROM notes)
            """,
            (serials,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def _create_topic(env: Env, name: str, partitions: int = 4) -> None:
    """The readings topic exists before the worker starts: Faust ignores a source topic that is missing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=env.stack.kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def faust_and_kafka(env: Env, *, rate: float, quick: bool) -> Row:
    await _create_topic(env, "chaos-readings")
    worker = faust_worker(env.stack).start()
    service = ingest(env.stack, transport="kafka", ingest_mqtt_client_id="chaos-kafka",
                     ingest_mqtt_share_group="chaos-kafka").start()  # fmt: skip
    await asyncio.to_thread(service.ready)
    devices = list(env.fleet.devices)
    waves = [devices[0::3], devices[1::3], devices[2::3]]
    duration = 45 if quick else 90
    load = Load(env, rate, duration).start()
    notes: list[str] = []
    exits: list[str] = []
    stop = asyncio.Event()

    async def supervise() -> None:
        """Restarts the worker when it exits by itself, as systemd or compose would (the kill is restarted below)."""
        while not stop.is_set():
            await asyncio.sleep(1)
            if not worker.alive and not killed.is_set():
                exits.append(worker.last_error())
                worker.start()

    killed = asyncio.Event()
    supervisor = asyncio.create_task(supervise())
    try:
        await asyncio.sleep(5)
        await _alerts(env, waves[0])
        await asyncio.sleep(3)
        killed.set()
        await asyncio.to_thread(worker.kill)
        await _alerts(env, waves[1])
        await asyncio.sleep(5)
        worker.start()
        killed.clear()
        await asyncio.sleep(10)
        restart_started = time.monotonic()
        await _alerts(env, waves[2][: len(waves[2]) // 2])
        await asyncio.to_thread(env.stack.kafka_restart)
        notes.append(f"Kafka restart took {time.monotonic() - restart_started:.1f}s")
        await _alerts(env, waves[2][len(waves[2]) // 2 :])
        fault_end = time.monotonic()
        row = await _finish("kill -9 Faust + restart Kafka", env, load,
                            "kill -9 Faust worker; Kafka broker restart", fault_end, notes)  # fmt: skip
        deadline = time.monotonic() + 180
        patients, once, notifications, distinct = _count(env)
        while (once < patients or notifications < patients) and time.monotonic() < deadline:
            await asyncio.sleep(2)
            patients, once, notifications, distinct = _count(env)
        lost_alerts = patients - once
        duplicate_notifications = notifications - distinct
        row.notes.append(
            f"alerts: {once}/{patients} patients with exactly one critical episode (lost {lost_alerts});"
            f" notifications {notifications}, duplicates {duplicate_notifications}"
        )
        row.ok = row.ok and lost_alerts == 0 and duplicate_notifications == 0 and notifications == patients
        row.notes.append(f"faust worker started {worker.starts}x (1 kill -9), alive at the end: {worker.alive}")
        row.notes.extend(f"worker exited by itself: {e}" for e in exits)
        return row
    finally:
        stop.set()
        supervisor.cancel()
        service.close()
        worker.close()
