"""The MQTT adapter's protocol parses packets as the transport hands data over (no reader task): a packet split
across reads, several packets in one read and a multi-byte remaining length must come out whole and in order,
exactly as gmqtt's own reader would hand them to its connection."""

from __future__ import annotations

import struct

import pytest
from gmqtt.mqtt.package import Package
from gmqtt.mqtt.utils import ConnectionState, IdGenerator

from ingest.subscriber import _Protocol


class _Received:
    """Stands in for gmqtt's MQTTConnection: the packages the protocol hands over."""

    def __init__(self) -> None:
        self.packages: list[Package] = []

    def put_package(self, package: Package) -> None:
        self.packages.append(package)


def publish(topic: str, mid: int, payload: bytes) -> tuple[bytes, bytes]:
    """A QoS 1 MQTT 5 PUBLISH: (the whole packet, its variable header + payload)."""
    body = struct.pack("!H", len(topic)) + topic.encode() + struct.pack("!H", mid) + b"\x00" + payload
    length, remaining = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        remaining += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return bytes([0x32]) + remaining + body, body


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
async def test_packets_come_out_whole_and_in_order_however_the_reads_cut_them(chunk: int) -> None:
    # async: gmqtt's protocol binds the running loop when constructed
    received = _Received()
    protocol = _Protocol(connection_state=ConnectionState(), id_generator=IdGenerator())
    protocol.set_connection(received)
    packets = [publish("devices/a/readings", 1, b"{}"), publish("devices/b/readings", 2, b"x" * 300)]
    packets.append(publish("devices/c/readings", 3, b"y" * 20_000))
    stream = b"".join(whole for whole, _ in packets)
    for start in range(0, len(stream), chunk):
        protocol.data_received(stream[start : start + chunk])
    assert [(p.cmd, p.data) for p in received.packages] == [(0x32, body) for _, body in packets]
