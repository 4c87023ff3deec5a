"""The MQTT adapters against the real Mosquitto: acknowledgements, refusals, fleets and scenario playback."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import gmqtt
import pytest

from device_simulators.fault import FaultKind, FaultPlan, inject
from device_simulators.fleet import FleetPlan, run_fleet
from device_simulators.player import play
from device_simulators.publisher import NOT_AUTHORIZED, Broker, Connection
from device_simulators.scenario import SCENARIOS, run_scenario
from device_simulators.tally import Tally
from ingest.settings import IngestSettings
from tests.conftest import MqttDeviceFactory


@pytest.fixture
def broker(ingest_settings: IngestSettings) -> Broker:
    return Broker(ingest_settings.mqtt_host, ingest_settings.mqtt_port)


class Subscriber:
    """Everything the broker delivers on some topics, as the ingest service user sees it."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Event()

    def on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        self.messages.append((topic, payload))
        self._arrived.set()
        return 0

    async def wait_for(self, count: int, limit_s: float = 10.0) -> None:
        async with asyncio.timeout(limit_s):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()


@pytest.fixture
async def subscribe(ingest_settings: IngestSettings, broker: Broker) -> AsyncIterator[Any]:
    clients: list[Any] = []

    async def make(*topics: str) -> Subscriber:
        sub = Subscriber()
        client = gmqtt.Client(f"test-sub-{secrets.token_hex(4)}")
        client.set_auth_credentials(
            ingest_settings.mqtt_ingest_user, ingest_settings.mqtt_ingest_password.get_secret_value()
        )
        client.on_message = sub.on_message
        subscribed = asyncio.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        await client.connect(broker.host, broker.port, version=gmqtt.constants.MQTTv50)
        clients.append(client)
        for topic in topics:
            subscribed.clear()
            client.subscribe(topic, qos=1)
            await asyncio.wait_for(subscribed.wait(), 5)
        return sub

    yield make
    for client in clients:
        await client.disconnect()


async def test_every_publish_is_acknowledged_and_a_foreign_topic_is_refused(
    mqtt_device: MqttDeviceFactory, broker: Broker
) -> None:
    mine, other = mqtt_device(), mqtt_device()
    tally = Tally()
    conn = Connection(f"t-{mine.serial}", mine.serial, mine.password, on_ack=tally.on_ack, window=10)
    await conn.connect(broker)
    try:
        for seq in range(1, 51):
            await conn.publish(f"devices/{mine.serial}/readings", b"{}", seq)
        await conn.publish(f"devices/{other.serial}/readings", b"{}", 51)
        assert await conn.drain(10)
    finally:
        await conn.close()
    assert tally.acked == 51
    assert tally.refused == tally.not_authorized == 1
    assert tally.reasons[NOT_AUTHORIZED] == 1
    assert len(tally.latencies) == 51


async def test_fleet_sends_exactly_the_messages_it_counts(
    mqtt_device: MqttDeviceFactory, broker: Broker, subscribe: Any
) -> None:
    devices = [mqtt_device() for _ in range(3)]
    sub = await subscribe(*(f"devices/{d.serial}/readings" for d in devices))
    plan = FleetPlan(
        run_id=f"t{secrets.token_hex(3)}",
        rate=2000,
        readings_per_message=2,
        duration_s=30,
        max_messages=300,
        window=50,
        seed=4,
    )
    result = await run_fleet(
        plan, [d.serial for d in devices], broker, device_passwords=[d.password for d in devices], progress=None
    )
    assert (result["sent"], result["acked"], result["unacked"], result["refused"]) == (300, 300, 0, 0)
    assert result["readings_sent"] == 600
    assert sum(result["last_seq"].values()) == 300
    await sub.wait_for(300)
    seen: dict[str, set[int]] = {}
    for topic, payload in sub.messages:
        body = json.loads(payload)
        assert body["meta"]["run"] == plan.run_id
        seen.setdefault(topic.split("/")[1], set()).add(body["meta"]["seq"])
    assert {serial: max(seqs) for serial, seqs in seen.items()} == result["last_seq"]
    assert all(seqs == set(range(1, len(seqs) + 1)) for seqs in seen.values())


async def test_a_scenario_with_faults_reaches_the_broker_as_scripted(
    mqtt_device: MqttDeviceFactory, broker: Broker, subscribe: Any
) -> None:
    cuff, other = mqtt_device(kind="bp_cuff"), mqtt_device()
    scenario = SCENARIOS["hypertensive_crisis"]
    _, clean = run_scenario(
        scenario,
        datetime.now(UTC) - timedelta(days=scenario.days),
        serial_prefix="x",
        serials={kind: cuff.serial for kind in scenario.kinds},
    )
    plan = FaultPlan(rates={FaultKind.FOREIGN_TOPIC: 0.3, FaultKind.MALFORMED: 0.2, FaultKind.DUPLICATE: 0.2})
    faulty = inject(clean, plan, seed=2, foreign_serial=other.serial, key="broker-test")
    assert faulty.counts[FaultKind.FOREIGN_TOPIC] > 0
    sub = await subscribe(f"devices/{cuff.serial}/readings", f"devices/{other.serial}/readings")
    report = await play(faulty.envelopes, {cuff.serial: cuff.password}, broker)
    assert report.as_expected, report.unexpected
    assert report.refused == sum(e.expected.broker_denied for e in faulty.envelopes) >= 1
    delivered = [e for e in faulty.envelopes if not e.expected.broker_denied]
    await sub.wait_for(len(delivered))
    await asyncio.sleep(0.2)
    assert sub.messages == [(e.topic, e.payload) for e in delivered]
