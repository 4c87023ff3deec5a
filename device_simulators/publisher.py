"""The MQTT adapter: one MQTT v5 connection that publishes at QoS 1 and tracks every PUBACK.

gmqtt was chosen by measurement (docs/benchmarks.md): ~95k QoS 1 publishes/s acknowledged on one connection
on this box, against ~15k for paho-mqtt. gmqtt exposes no PUBACK callback, so acknowledgements are observed
through its in-flight store (`persistent_storage`, a public constructor argument) and the PUBACK reason code
through one hook on its packet handler (covered by tests/device_simulators/test_publisher.py).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import gmqtt
from gmqtt.storage import PersistentStorage

logger = logging.getLogger(__name__)

# MQTT 5 PUBACK reason codes that Mosquitto sends to a publisher.
SUCCESS = 0x00
NO_MATCHING_SUBSCRIBERS = 0x10
NOT_AUTHORIZED = 0x87

AckCallback = Callable[[int, int, float], None]
"""Called with (seq, reason code, publish-to-PUBACK seconds) for every acknowledged publish."""


class PublishError(Exception):
    retriable: ClassVar[bool] = True


class ConnectError(PublishError):
    def __init__(self, username: str, detail: str) -> None:
        self.username = username
        super().__init__(f"{username}: could not connect: {detail}")


@dataclass(frozen=True, slots=True)
class Broker:
    host: str = "127.0.0.1"
    port: int = 11883


class _InFlight(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacknowledged QoS 1 packets, which also times and reports each acknowledgement."""

    def __init__(self, on_ack: AckCallback, window: int, clock: Callable[[], float]) -> None:
        super().__init__()
        self._on_ack = on_ack
        self._window = window
        self._clock = clock
        self._sent: dict[int, tuple[int, float]] = {}
        self._reasons: dict[int, int] = {}
        self._room = asyncio.Event()
        self._room.set()
        self.next_seq = 0

    @property
    def inflight(self) -> int:
        return len(self._sent)

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if mid not in self._sent:  # a resend after reconnect keeps the original send time
            self._sent[mid] = (self.next_seq, self._clock())
            if len(self._sent) >= self._window:
                self._room.clear()

    def note_reason(self, mid: int, reason: int) -> None:
        self._reasons[mid] = reason

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        sent = self._sent.pop(mid, None)
        if sent is None:
            return
        seq, at = sent
        self._on_ack(seq, self._reasons.pop(mid, SUCCESS), self._clock() - at)
        if len(self._sent) < self._window:
            self._room.set()

    async def room(self) -> None:
        await self._room.wait()


class Connection:
    """One authenticated MQTT v5 connection (a device, or a multiplexing load-generator identity).

    Publishes are QoS 1; at most `window` are unacknowledged at once, and `publish` waits for room, so a slow
    broker slows the publisher instead of growing a buffer.
    """

    def __init__(
        self,
        client_id: str,
        username: str,
        password: str,
        *,
        on_ack: AckCallback,
        window: int = 1000,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.username = username
        self._inflight = _InFlight(on_ack, window, clock)
        self._client: Any = gmqtt.Client(client_id, clean_session=True, persistent_storage=self._inflight)
        self._client.set_auth_credentials(username, password)
        self._client.set_config({"reconnect_retries": 5, "reconnect_delay": 1})
        handler = self._client._package_handler
        plain_puback = handler._handle_puback_packet

        def puback(cmd: int, packet: bytes) -> None:
            # gmqtt ignores the MQTT 5 reason code; Mosquitto uses it to say "not authorized" (0x87).
            (mid,) = struct.unpack("!H", packet[:2])
            self._inflight.note_reason(mid, packet[2] if len(packet) > 2 else SUCCESS)
            plain_puback(cmd, packet)

        handler._handle_puback_packet = puback

    @property
    def inflight(self) -> int:
        return self._inflight.inflight

    @property
    def is_connected(self) -> bool:
        return bool(self._client.is_connected)

    async def connect(self, broker: Broker, *, limit_s: float = 10.0, keepalive: int = 60) -> None:
        try:
            async with asyncio.timeout(limit_s):
                await self._client.connect(
                    broker.host, broker.port, keepalive=keepalive, version=gmqtt.constants.MQTTv50
                )
        except (OSError, TimeoutError, gmqtt.mqtt.handler.MQTTConnectError) as exc:
            raise ConnectError(self.username, repr(exc)) from exc

    def try_publish(self, topic: str, payload: bytes, seq: int) -> bool:
        """Publishes if the window has room; False (nothing sent) when it is full."""
        if self._inflight.inflight >= self._inflight._window:
            return False
        self._inflight.next_seq = seq
        self._client.publish(topic, payload, qos=1)
        return True

    async def publish(self, topic: str, payload: bytes, seq: int) -> None:
        while not self.try_publish(topic, payload, seq):
            await self._inflight.room()

    def publish_status(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 status message (`online`/`offline`), untracked."""
        self._client.publish(topic, payload, qos=0, retain=True)

    async def drain(self, limit_s: float) -> bool:
        """Waits until every publish is acknowledged; False if some are still in flight after `limit_s`."""
        try:
            async with asyncio.timeout(limit_s):
                await self._inflight.wait_empty()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self._client.disconnect()
        except (OSError, TimeoutError) as exc:
            logger.debug("disconnect of %s failed: %r", self.username, exc)
