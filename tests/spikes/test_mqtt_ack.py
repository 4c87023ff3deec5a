"""Spike (Foundation I): with gmqtt's `optimistic_acknowledgement=False`, a QoS 1 message is acknowledged only when
the async handler returns; the broker keeps a Receive-Maximum window of unacknowledged messages in flight and
redelivers every unacknowledged one to the next connection of the same persistent session.

What this establishes (read with gmqtt/mqtt/handler.py `_handle_qos_1_publish_packet`): the handler runs as a task
and the PUBACK is written by its done-callback; a handler that never returns means no PUBACK, ever, and many such
handlers can be pending at once (one task each), bounded by the Receive Maximum we announce.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import gmqtt
import paho.mqtt.client as paho
import pytest
from gmqtt.mqtt.constants import MQTTv50
from paho.mqtt.enums import CallbackAPIVersion

from ingest.settings import IngestSettings
from tests.conftest import MqttDeviceFactory

Handler = Callable[[Any, str, bytes, int, dict[str, Any]], Awaitable[int]]


@asynccontextmanager
async def session(
    settings: IngestSettings, client_id: str, topic: str, handler: Handler, *, receive_maximum: int
) -> AsyncIterator[gmqtt.Client]:
    """A persistent MQTT 5 session (clean start off, expiry 60 s) subscribed to `topic` at QoS 1."""
    client = gmqtt.Client(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=False,
        session_expiry_interval=60,
        receive_maximum=receive_maximum,
    )
    client.set_auth_credentials(settings.mqtt_ingest_user, settings.mqtt_ingest_password.get_secret_value())
    client.on_message = handler
    await client.connect(settings.mqtt_host, settings.mqtt_port, version=MQTTv50)
    client.subscribe(topic, qos=1)
    try:
        yield client
    finally:
        await client.disconnect()


async def end_session(settings: IngestSettings, client_id: str) -> None:
    client = gmqtt.Client(client_id, clean_session=True, session_expiry_interval=0)
    client.set_auth_credentials(settings.mqtt_ingest_user, settings.mqtt_ingest_password.get_secret_value())
    await client.connect(settings.mqtt_host, settings.mqtt_port, version=MQTTv50)
    await client.disconnect()


def publish(settings: IngestSettings, serial: str, password: str, count: int) -> None:
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{serial}", protocol=paho.MQTTv311)
    publisher.username_pw_set(serial, password)
    publisher.max_inflight_messages_set(1000)
    publisher.connect(settings.mqtt_host, settings.mqtt_port)
    publisher.loop_start()
    try:
        infos = [publisher.publish(f"devices/{serial}/readings", json.dumps({"seq": i}), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        publisher.disconnect()
        publisher.loop_stop()


async def wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {seconds}s")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("window", [50, 5_000])
async def test_unfinished_handlers_are_never_acknowledged_and_are_redelivered(
    ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory, window: int
) -> None:
    device = mqtt_device()
    topic = f"devices/{device.serial}/readings"
    client_id = f"spike-ack-{secrets.token_hex(4)}"
    total = window + 100
    seen: list[tuple[int, bool]] = []
    never = asyncio.Event()

    async def stuck(client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        seen.append((json.loads(payload)["seq"], bool(properties.get("dup"))))
        await never.wait()  # the "commit" never finishes
        return 0

    try:
        async with session(ingest_settings, client_id, topic, stuck, receive_maximum=window):
            await asyncio.to_thread(publish, ingest_settings, device.serial, device.password, total)
            await wait_for(lambda: len(seen) >= window)
            await asyncio.sleep(1.0)
            # The broker stops at the window: nothing beyond Receive Maximum arrives while nothing is acknowledged.
            assert len(seen) == window
            assert {seq for seq, _ in seen} == set(range(window))
        # Same client id, a new connection: every unacknowledged message comes again, then the queued rest.
        redelivered: list[tuple[int, bool]] = []

        async def finishes(client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
            redelivered.append((json.loads(payload)["seq"], bool(properties.get("dup"))))
            await asyncio.sleep(0.001)  # an async "commit"
            return 0

        async with session(ingest_settings, client_id, topic, finishes, receive_maximum=window):
            await wait_for(lambda: len(redelivered) >= total)
            await asyncio.sleep(0.5)
        assert sorted(seq for seq, _ in redelivered) == list(range(total))
        assert all(dup for seq, dup in redelivered if seq < window)
        # Their handlers returned, so they were acknowledged: a third connection gets nothing.
        nothing: list[int] = []

        async def records(client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
            nothing.append(json.loads(payload)["seq"])
            return 0

        async with session(ingest_settings, client_id, topic, records, receive_maximum=window):
            await asyncio.sleep(1.0)
        assert nothing == []
    finally:
        never.set()
        await end_session(ingest_settings, client_id)


async def test_a_handler_that_finishes_late_is_acknowledged_then(
    ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory
) -> None:
    device = mqtt_device()
    topic = f"devices/{device.serial}/readings"
    client_id = f"spike-late-{secrets.token_hex(4)}"
    release = asyncio.Event()
    finished: list[int] = []

    async def slow(client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        await release.wait()
        finished.append(json.loads(payload)["seq"])
        return 0

    try:
        async with session(ingest_settings, client_id, topic, slow, receive_maximum=100):
            await asyncio.to_thread(publish, ingest_settings, device.serial, device.password, 20)
            await asyncio.sleep(0.5)
            release.set()
            await wait_for(lambda: len(finished) == 20)
            await asyncio.sleep(0.3)  # the PUBACKs are written by the handlers' done-callbacks
        again: list[int] = []

        async def records(client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
            again.append(json.loads(payload)["seq"])
            return 0

        async with session(ingest_settings, client_id, topic, records, receive_maximum=100):
            await asyncio.sleep(1.0)
        assert again == []
    finally:
        await end_session(ingest_settings, client_id)
