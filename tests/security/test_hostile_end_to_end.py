"""The hostile corpus through the real broker and a real ingest process: nothing stored, every message refused in
ingest_rejections with the right reason, and the service still stores a valid message right after."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest import provisioning
from ingest.admission import Limits
from ingest.settings import IngestSettings
from tests import factories
from tests.conftest import MqttDeviceFactory
from tests.factories import Device, Patient
from tests.ingest.harness import IngestProcess, Publisher, end_session, eventually
from tests.security import hostile

Conn = psycopg.Connection[Any]
Start = Callable[..., IngestProcess]


@pytest.fixture
async def ingest_service(ingest_settings: IngestSettings) -> AsyncIterator[Start]:
    started: list[IngestProcess] = []

    def start(serials: Iterable[str]) -> IngestProcess:
        process = IngestProcess(serials).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        await end_session(ingest_settings, process.client_id)


def _publish(settings: IngestSettings, device: Device, payloads: list[bytes]) -> None:
    """Publishes at QoS 1 and returns once every PUBACK arrived: ingest acknowledges only what it has stored."""
    with Publisher(settings, device.serial, device.password) as publisher:
        publisher.publish(payloads)


def _valid(message_id: str) -> bytes:
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return json.dumps(
        {"message_id": message_id, "readings": [{"type": "heart_rate", "value": 71, "unit": "/min", "measured_at": at}]}
    ).encode()


async def test_the_hostile_corpus_is_refused_end_to_end_and_a_valid_message_still_gets_through(
    db: Conn,
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    patient: Patient,
    ingest_service: Start,
) -> None:
    devices = {
        "assigned": mqtt_device(assign_to=patient),
        "unassigned": mqtt_device(),
        "unknown": mqtt_device(),
        "revoked": mqtt_device(),
    }
    # The broker knows all four; then the registry changes behind its back (no broker sync): one device
    # disappears from it (renamed), one is revoked. Ingest must refuse both on its own.
    db.execute("UPDATE devices SET serial = %s WHERE id = %s", (factories.unique("gone"), devices["unknown"].id))
    provisioning.revoke_device(db, serial=devices["revoked"].serial)
    service = await ingest_service([d.serial for d in devices.values()]).ready()

    limits = Limits()
    started = datetime.now(UTC)
    cases = [c for c in hostile.corpus(started, limits) if c.name not in hostile.KNOWN_DEFECTS]
    by_device: dict[str, list[hostile.Case]] = defaultdict(list)
    for case in cases:
        by_device[case.device].append(case)
    for kind in ("revoked", "unknown", "unassigned", "assigned"):  # registry tricks first: keep their window short
        await asyncio.to_thread(_publish, ingest_settings, devices[kind], [c.payload for c in by_device[kind]])
    await asyncio.to_thread(_publish, ingest_settings, devices["assigned"], [_valid("after-the-storm")])

    ids = [d.id for d in devices.values()]
    await eventually(
        lambda: db.execute("SELECT count(*) FROM vital_readings WHERE device_id = ANY(%s)", (ids,)).fetchone() == (1,),
        what="the valid message stored",
    )
    stored = db.execute("SELECT message_id FROM vital_readings WHERE device_id = ANY(%s)", (ids,)).fetchall()
    assert stored == [("after-the-storm",)]

    topics = {f"devices/{d.serial}/readings": kind for kind, d in devices.items()}
    rows = db.execute(
        "SELECT topic, payload, reason::text, reading_index FROM ingest_rejections"
        " WHERE topic = ANY(%s) AND received_at >= %s",
        (list(topics), started - timedelta(seconds=5)),
    ).fetchall()
    found: dict[tuple[str, bytes], list[tuple[str, int | None]]] = defaultdict(list)
    for topic, payload, reason, index in rows:
        found[(topics[topic], bytes(payload))].append((reason, index))
    wrong: dict[str, tuple[list[tuple[str, int | None]], list[tuple[str, int | None]]]] = {}
    for case in cases:
        want = sorted(((r.value, i) for r, i in case.refusals), key=str)
        got = sorted(found.pop((case.device, case.payload[: limits.max_payload_bytes]), []), key=str)
        if got != want:
            wrong[case.name] = (got, want)
    assert wrong == {}
    assert found == {}  # no refusal that matches no case
    assert len(rows) == sum(len(c.refusals) for c in cases)
    assert await service.metric("ingest_messages_received_total") >= len(cases) + 1
    assert service.proc is not None and service.proc.poll() is None


async def test_a_message_that_crashes_the_validator_blocks_nothing_behind_it(
    db: Conn, ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory, patient: Patient, ingest_service: Start
) -> None:
    device = mqtt_device(assign_to=patient)
    await ingest_service([device.serial]).ready()
    poison = next(c for c in hostile.corpus(datetime.now(UTC), Limits()) if c.name == "timestamp_year_1_east_offset")

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.username_pw_set(device.serial, device.password)
    client.connect(ingest_settings.mqtt_host, ingest_settings.mqtt_port)
    client.loop_start()
    try:
        client.publish(f"devices/{device.serial}/readings", poison.payload, qos=1)
        client.publish(f"devices/{device.serial}/readings", _valid("behind-the-poison"), qos=1)
        await eventually(
            lambda: (
                db.execute("SELECT count(*) FROM vital_readings WHERE device_id = %s", (device.id,)).fetchone() == (1,)
            ),
            seconds=8,  # a valid message is stored within a second; this waits for one stuck behind the poison
            what="the message behind the poison stored",
        )
    finally:
        client.disconnect()
        client.loop_stop()
