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


async def faust_and_kafka(env: Env, *, rate: float, quick: bool) -> Row:
    worker = faust_worker(env.stack).start()
    service = ingest(env.stack, transport="kafka", ingest_mqtt_client_id="chaos-kafka",
                     ingest_mqtt_share_group="chaos-kafka").start()  # fmt: skip
    await asyncio.to_thread(service.ready)
    devices = list(env.fleet.devices)
    waves = [devices[0::3], devices[1::3], devices[2::3]]
    duration = 45 if quick else 90
    load = Load(env, rate, duration).start()
    notes: list[str] = []
    try:
        await asyncio.sleep(5)
        await _alerts(env, waves[0])
        await asyncio.sleep(3)
        await asyncio.to_thread(worker.kill)
        await _alerts(env, waves[1])
        await asyncio.sleep(5)
        worker.start()
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
        row.notes.append(f"faust worker restarted {worker.starts - 1}x, alive: {worker.alive}")
        return row
    finally:
        service.close()
        worker.close()
