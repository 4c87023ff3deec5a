"""Benchmark: which Python MQTT client can ingest build on? QoS 1 receive rate, with and without acknowledging
only after the message handler finished, in the bench sandbox (private Mosquitto), the load generator publishing.

  gmqtt auto-ack          sync handler, PUBACK at receipt (optimistic_acknowledgement=True, the default)
  gmqtt ack-after-handler async handler awaited before the PUBACK (optimistic_acknowledgement=False): ingest's mode
  paho auto-ack           network loop in a thread, PUBACK at receipt
  paho manual-ack         manual_ack=True, client.ack(mid) once the callback handled the message
  aiomqtt                 async iterator; acknowledges at receipt and has no manual acknowledgement

Usage: .venv/bin/python -m scripts.bench.mqtt_clients [--messages 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import gmqtt
import paho.mqtt.client as paho
from gmqtt.mqtt.constants import MQTTv50
from paho.mqtt.enums import CallbackAPIVersion

from scripts.bench.load import start_publisher, write_fleet
from scripts.bench.sandbox import Sandbox, sandbox

TOPIC = "devices/+/readings"
Publish = Callable[[], Any]


class Counter:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
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


async def gmqtt_rate(box: Sandbox, expected: int, publish: Publish, *, after_handler: bool) -> float:
    counter = Counter(expected)
    client = gmqtt.Client(
        f"bench-gmqtt-{uuid.uuid4().hex[:6]}", optimistic_acknowledgement=not after_handler, receive_maximum=10_000
    )
    client.set_auth_credentials(box.ingest.mqtt_ingest_user, box.ingest.mqtt_ingest_password.get_secret_value())

    async def handled(*_: Any) -> int:
        await asyncio.sleep(0)  # a handler that yields once, as a real (awaiting) one does
        counter.hit()
        return 0

    def received(*_: Any) -> int:
        counter.hit()
        return 0

    client.on_message = handled if after_handler else received
    await client.connect(box.broker.host, box.broker.port, version=MQTTv50)
    client.subscribe(TOPIC, qos=1)
    await asyncio.sleep(0.5)
    proc = publish()
    try:
        await asyncio.to_thread(counter.done.wait, 180)
    finally:
        await client.disconnect()
        await asyncio.to_thread(proc.wait)
    return counter.rate()


def paho_rate(box: Sandbox, expected: int, publish: Publish, *, manual_ack: bool) -> float:
    counter = Counter(expected)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-paho-{uuid.uuid4().hex[:6]}",
        protocol=paho.MQTTv5,
        manual_ack=manual_ack,
    )
    client.username_pw_set(box.ingest.mqtt_ingest_user, box.ingest.mqtt_ingest_password.get_secret_value())

    def on_message(c: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        counter.hit()
        if manual_ack:
            c.ack(message.mid, message.qos)

    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(box.broker.host, box.broker.port)
    client.loop_start()
    try:
        client.subscribe(TOPIC, qos=1)
        subscribed.wait(5)
        proc = publish()
        counter.done.wait(180)
        proc.wait()
    finally:
        client.disconnect()
        client.loop_stop()
    return counter.rate()


async def aiomqtt_rate(box: Sandbox, expected: int, publish: Publish) -> float:
    counter = Counter(expected)
    async with aiomqtt.Client(
        box.broker.host,
        box.broker.port,
        username=box.ingest.mqtt_ingest_user,
        password=box.ingest.mqtt_ingest_password.get_secret_value(),
        identifier=f"bench-aiomqtt-{uuid.uuid4().hex[:6]}",
    ) as client:
        await client.subscribe(TOPIC, qos=1)
        proc = publish()
        try:
            async with asyncio.timeout(180):
                async for _ in client.messages:
                    counter.hit()
                    if counter.count >= expected:
                        break
        except TimeoutError:
            pass
        finally:
            await asyncio.to_thread(proc.wait)
    return counter.rate()


def _publisher_rates(state_dir: Path) -> list[float]:
    return [json.loads(p.read_text())["sent_per_s"] for p in sorted(state_dir.glob("mqtt-gmqtt auto-ack-*.json"))]


async def measure(messages: int, repeat: int, devices: int) -> dict[str, Any]:
    with sandbox() as box:
        fleet = box.provision("mqtt-bench", devices)
        credentials = write_fleet(box, fleet, "mqtt-bench-fleet")
        runs: dict[str, list[float]] = {}

        def publish_factory(name: str, count: int) -> Publish:
            def publish() -> Any:
                out = box.state_dir / f"mqtt-{name}-{time.monotonic_ns()}.json"
                proc = start_publisher(box, credentials, out, devices=devices, duration=600, messages=count)
                return proc

            return publish

        cases: list[tuple[str, int, Callable[[Publish, int], Awaitable[float]]]] = [
            ("gmqtt auto-ack", messages, lambda p, n: gmqtt_rate(box, n, p, after_handler=False)),
            ("gmqtt ack-after-handler", messages, lambda p, n: gmqtt_rate(box, n, p, after_handler=True)),
            ("paho auto-ack", messages // 3, lambda p, n: asyncio.to_thread(paho_rate, box, n, p, manual_ack=False)),
            ("paho manual-ack", messages // 3, lambda p, n: asyncio.to_thread(paho_rate, box, n, p, manual_ack=True)),
            ("aiomqtt", messages // 5, lambda p, n: aiomqtt_rate(box, n, p)),
        ]
        for run in range(repeat):
            for name, count, case in cases:
                rate = await case(publish_factory(name, count), count)
                runs.setdefault(name, []).append(rate)
                print(f"[mqtt-bench] run {run + 1}: {name:26s} {rate:>10,.0f} msg/s ({count:,} messages)", flush=True)
        publisher_rates = _publisher_rates(box.state_dir)
    return {
        "messages": messages,
        "repeat": repeat,
        "median_msg_per_s": {k: round(statistics.median(v)) for k, v in runs.items()},
        "runs": runs,
        "publisher_msg_per_s": publisher_rates,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.mqtt_clients", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--devices", type=int, default=20)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.messages, args.repeat, args.devices)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
