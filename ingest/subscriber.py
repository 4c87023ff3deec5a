"""The MQTT adapter (gmqtt): a persistent MQTT 5 session whose PUBACKs are sent only after commit.

gmqtt with `optimistic_acknowledgement=False` runs an async `on_message` as a task and sends the PUBACK from the
task's done-callback with the reason code the handler returned (gmqtt/mqtt/handler.py,
`_handle_qos_1_publish_packet` / `__handle_publish_callback`). So the handler awaits the pipeline and returns
0 only once the message is durable. A negative PUBACK (>= 0x80) would still end the broker's delivery, so a
message that is *not* durable must never be answered on a live connection: its handler waits until the
connection is closed and only then returns (the PUBACK write to a closed transport is dropped), and the broker
redelivers it to the next session. The broker never has more than Receive Maximum unacknowledged messages in
flight to us, which bounds the handler tasks and the memory they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50
from gmqtt.mqtt.package import CommandWithMidPacket

from ingest.admission import Envelope
from ingest.backoff import Backoff
from ingest.clock import Clock
from ingest.metrics import Metrics
from ingest.payload import parse_topic
from ingest.pipeline import Lifecycle, Pipeline
from ingest.settings import IngestSettings
from ingest.status import StatusTracker

logger = logging.getLogger(__name__)

SUCCESS = 0
NOT_ACKNOWLEDGED = 0x80  # only ever "sent" to a closed connection, see the module docstring


class _Client(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's client with capped, jittered reconnect delays instead of its fixed one, and PUBACKs coalesced.

    gmqtt writes each PUBACK to the socket on its own (one send() system call per message, the largest single
    cost of a message after the event loop's own, by py-spy). A committed batch releases its handlers together,
    so their PUBACKs are gathered and written in one piece on the next loop iteration: still only after the
    handler returned (after commit), to the connection gmqtt would have used, and dropped like gmqtt drops them
    when that connection is closing (the broker then redelivers).
    """

    backoff: Backoff
    metrics: Metrics
    pending_acks: list[bytes]

    async def reconnect(self, delay: bool = False) -> None:
        if delay:
            self.reconnect_delay = self.backoff.next_delay()
        self.metrics.mqtt_reconnects.inc()
        await super().reconnect(delay=delay)

    def _send_command_with_mid(self, cmd: int, mid: int, dup: bool, reason_code: int = 0) -> None:
        # gmqtt's handler calls this for PUBACK (and the QoS 2 commands, which ingest never subscribes with).
        if cmd != MQTTCommands.PUBACK:
            super()._send_command_with_mid(cmd, mid, dup, reason_code=reason_code)
            return
        if not self.pending_acks:
            asyncio.get_running_loop().call_soon(self.flush_acks)
        version = self._connection_state.protocol_version
        self.pending_acks.append(CommandWithMidPacket.build_package(cmd, mid, dup, reason_code, version))

    def flush_acks(self) -> None:
        """Writes the gathered PUBACKs in one piece (nothing when the connection is gone or closing)."""
        acks, self.pending_acks = self.pending_acks, []
        connection = self._connection
        if not acks:
            return
        if connection is None or connection.is_closing():
            logger.debug("%d PUBACKs dropped: the connection is closing (the broker redelivers)", len(acks))
            return
        connection.send_package(b"".join(acks))


def subscription_topic(filter_: str, share_group: str) -> str:
    return f"$share/{share_group}/{filter_}" if share_group else filter_


class Subscriber:
    def __init__(
        self,
        settings: IngestSettings,
        pipeline: Pipeline,
        status: StatusTracker | None,
        metrics: Metrics,
        lifecycle: Lifecycle,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._status = status
        self._metrics = metrics
        self._life = lifecycle
        self._clock = clock
        self._accepting = True
        self._closed = asyncio.Event()
        self._inflight = 0
        self._backoff = Backoff(settings.ingest_reconnect_initial_s, settings.ingest_reconnect_max_s)
        self.connected = False
        metrics.inflight.set_function(lambda: self._inflight)

    def _new_client(self) -> _Client:
        s = self._settings
        client = _Client(
            s.ingest_mqtt_client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=s.ingest_mqtt_session_expiry_s,
            receive_maximum=s.ingest_mqtt_receive_maximum,
        )
        client.backoff = self._backoff
        client.pending_acks = []
        client.metrics = self._metrics
        client.set_auth_credentials(s.mqtt_ingest_user, s.mqtt_ingest_password.get_secret_value())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    async def run(self) -> None:
        """Connects (retrying with backoff), consumes until stop, then hands over for a clean disconnect."""
        client = await self._connect()
        try:
            if client is not None:
                await self._life.stop.wait()
        finally:
            self._accepting = False
            if client is not None:
                await self._wait_for_acks()
                client.flush_acks()
                self.connected = False
                try:
                    await asyncio.wait_for(client.disconnect(), timeout=5)
                except Exception as exc:  # the process is leaving either way; the session persists in the broker
                    logger.warning("MQTT disconnect failed: %s", exc)
            self.connected = False
            self._metrics.mqtt_connected.set(0)
            self._closed.set()

    async def _connect(self) -> _Client | None:
        s = self._settings
        while not self._life.stop.is_set():
            client = self._new_client()
            try:
                await asyncio.wait_for(
                    client.connect(s.mqtt_host, s.mqtt_port, keepalive=s.ingest_mqtt_keepalive_s, version=MQTTv50),
                    timeout=10,
                )
                return client
            except Exception as exc:
                delay = self._backoff.next_delay()
                self._metrics.mqtt_reconnects.inc()
                logger.warning(
                    "MQTT connect to %s:%s failed (%s); retrying in %.1fs", s.mqtt_host, s.mqtt_port, exc, delay
                )
                try:
                    await client.disconnect()
                except Exception:  # never connected: nothing to close
                    logger.debug("disconnect after a failed connect", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._life.stop.wait(), timeout=delay)
        return None

    async def _wait_for_acks(self) -> None:
        """Waits (within the grace period) until every handler knows its message's fate and durable ones returned.

        After the writers drained, whatever is still queued (or still being queued by a handler that was waiting
        for room) will not be written: it is resolved as not durable.
        """
        deadline = self._life.deadline()
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._life.drained.wait(), timeout)
        while self._inflight > 0 and not self._life.past_deadline():
            self._pipeline.abandon()
            await asyncio.sleep(0.005)
        # gmqtt hands a PUBACK over from the done-callback, one loop iteration after the handler returned (then
        # `run` flushes what _Client gathered).
        for _ in range(3):
            await asyncio.sleep(0)

    def _on_connect(self, client: _Client, flags: int, rc: int, properties: dict[str, Any]) -> None:
        s = self._settings
        self._backoff.reset()
        self.connected = True
        self._metrics.mqtt_connected.set(1)
        group = s.ingest_mqtt_share_group
        subscriptions = [
            gmqtt.Subscription(subscription_topic(f, group), qos=1) for f in s.ingest_mqtt_readings_filters
        ]
        if self._status is not None:
            # Retained statuses only on a new subscription, not on every reconnect of a persistent session.
            subscriptions.extend(
                gmqtt.Subscription(subscription_topic(f, group), qos=1, retain_handling_options=1)
                for f in s.ingest_mqtt_status_filters
            )
        client.subscribe(subscriptions)
        logger.info("MQTT connected as %s (session present: %s)", s.ingest_mqtt_client_id, bool(flags))

    def _on_disconnect(self, client: _Client, packet: object, exc: BaseException | None = None) -> None:
        if self.connected:
            logger.warning("MQTT connection lost")
        self.connected = False
        self._metrics.mqtt_connected.set(0)

    async def _on_message(
        self, client: _Client, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        received_at = self._clock()
        if not self._accepting:
            await self._closed.wait()
            return NOT_ACKNOWLEDGED
        self._inflight += 1
        try:
            # Only a topic ending in /status can be one (the regex is left to the rare status message).
            parsed = parse_topic(topic) if topic.endswith("/status") else None
            if parsed is not None and parsed.kind == "status":
                self._metrics.received_status.inc()
                if self._status is None:
                    durable = True
                else:
                    retained = bool(properties.get("retain"))
                    durable = await self._status.submit(
                        parsed.serial, payload, retained=retained, received_at=received_at
                    )
            else:
                self._metrics.received_readings.inc()
                durable = await self._pipeline.submit(Envelope(topic, payload, received_at))
        finally:
            self._inflight -= 1
        if durable:
            return SUCCESS
        await self._closed.wait()
        return NOT_ACKNOWLEDGED
