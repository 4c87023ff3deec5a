"""The MQTT adapter (gmqtt): a persistent MQTT 5 session whose PUBACKs are sent only after commit.

gmqtt with `optimistic_acknowledgement=False` runs an async `on_message` as a task per message and sends the
PUBACK from the task's done-callback (gmqtt/mqtt/handler.py, `_handle_qos_1_publish_packet` /
`__handle_publish_callback`). That task, and the future it awaited in the pipeline, were per-message CPU that
bought nothing, so the adapter takes gmqtt's QoS 1 step itself (`_on_publish`, called with the packet id as
gmqtt's handler parsed it): a reading is handed to the pipeline synchronously with a settle callback, and the
PUBACK (reason 0) is queued only when the pipeline settles the message as durable (its readings committed or its
refusal stored). A message that is *not* durable is never answered (a negative PUBACK, >= 0x80, would still end
the broker's delivery): the broker redelivers it to the next session. The broker never has more than Receive
Maximum unacknowledged messages in flight to us, which bounds the deliveries held; when the pipeline's queue is
full a message waits for room in a task of its own (backpressure as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import datetime
from functools import partial
from typing import Any

import gmqtt
from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50
from gmqtt.mqtt.package import CommandWithMidPacket
from gmqtt.mqtt.protocol import BaseMQTTProtocol, MQTTProtocol

from ingest.admission import Envelope
from ingest.backoff import Backoff
from ingest.clock import Clock
from ingest.metrics import Metrics
from ingest.payload import parse_topic
from ingest.pipeline import Delivery, Lifecycle, Pipeline
from ingest.settings import IngestSettings
from ingest.status import StatusTracker

logger = logging.getLogger(__name__)


class _Protocol(MQTTProtocol):  # type: ignore[misc]
    """gmqtt's protocol, parsing packets as the transport hands the data over.

    gmqtt feeds an asyncio StreamReader and parses in a reader task, so every read event costs a future, a task
    step and one more event-loop iteration besides the parsing; at a few thousand messages per second a read
    often holds one message or a few. Parsing (`_read_packet`) and packet handling stay gmqtt's own, and run as
    before: synchronously, in arrival order.
    """

    _unparsed = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        BaseMQTTProtocol.connection_made(self, transport)  # not MQTTProtocol's, which starts the reader task

    def data_received(self, data: bytes) -> None:
        buffer = self._unparsed + data if self._unparsed else data
        parsed = self._read_packet(buffer)
        if parsed == -1:  # a malformed length: close, so that the client reconnects (gmqtt's reader just stopped)
            self._unparsed = b""
            self._transport.close()
            return
        self._unparsed = buffer[parsed:]

    def eof_received(self) -> bool:
        return False  # the transport closes itself (gmqtt's reader closed it on reading the end of the stream)


class _Connection(MQTTConnection):  # type: ignore[misc]
    @classmethod
    async def create_connection(
        cls,
        host: str,
        port: int,
        ssl: Any,
        clean_session: bool,
        keepalive: int,
        connection_state: Any,
        package_handler: Any,
        loop: asyncio.AbstractEventLoop | None = None,
        logger: logging.Logger | None = None,
    ) -> _Connection:
        factory = partial(_Protocol, connection_state=connection_state, id_generator=package_handler.id_generator)
        transport, protocol = await asyncio.get_running_loop().create_connection(factory, host, port, ssl=ssl)
        return cls(transport, protocol, clean_session, keepalive, package_handler=package_handler, logger=logger)


class _Client(gmqtt.Client):  # type: ignore[misc]
    """gmqtt's client with capped, jittered reconnect delays instead of its fixed one, and PUBACKs coalesced.

    gmqtt writes each PUBACK to the socket on its own (one send() system call per message, the largest single
    cost of a message after the event loop's own, by py-spy). A committed batch settles its messages together,
    so their PUBACKs are gathered and written in one piece on the next loop iteration: still only after commit,
    to the connection gmqtt would have used, and dropped like gmqtt drops them when that connection is closing
    (the broker then redelivers).
    """

    backoff: Backoff
    metrics: Metrics
    pending_acks: list[bytes]
    on_settled: Any  # the subscriber's settle callback for this client's deliveries

    async def reconnect(self, delay: bool = False) -> None:
        if delay:
            self.reconnect_delay = self.backoff.next_delay()
        self.metrics.mqtt_reconnects.inc()
        await super().reconnect(delay=delay)

    async def _create_connection(
        self, host: str, port: int, ssl: Any, clean_session: bool, keepalive: int
    ) -> MQTTConnection:
        # gmqtt 0.8's Client._create_connection with _Connection (packets parsed as data arrives) in place of
        # MQTTConnection; the state resets before it are gmqtt's, unchanged.
        self._exit_reconnecting_state()
        self._package_handler.clear_topics_aliases()
        self._connack_received.clear()
        self._connection_lost.clear()
        return await _Connection.create_connection(
            host,
            port,
            ssl,
            clean_session,
            keepalive,
            connection_state=self._connection_state,
            package_handler=self._package_handler,
            logger=self._logger,
        )

    def _send_command_with_mid(self, cmd: int, mid: int, dup: bool, reason_code: int = 0) -> None:
        # `acknowledge` calls this for PUBACK (and gmqtt for the QoS 2 commands, which ingest never subscribes with).
        if cmd != MQTTCommands.PUBACK:
            super()._send_command_with_mid(cmd, mid, dup, reason_code=reason_code)
            return
        if not self.pending_acks:
            asyncio.get_running_loop().call_soon(self.flush_acks)
        version = self._connection_state.protocol_version
        self.pending_acks.append(CommandWithMidPacket.build_package(cmd, mid, dup, reason_code, version))

    def acknowledge(self, mid: int) -> None:
        """Queues the PUBACK (success) of a received message that became durable."""
        self._send_command_with_mid(MQTTCommands.PUBACK, mid, False)

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
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
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
        client.on_settled = partial(self._settled, client)
        client.set_auth_credentials(s.mqtt_ingest_user, s.mqtt_ingest_password.get_secret_value())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        handler = client._package_handler
        if not callable(getattr(handler, "_handle_qos_1_publish_packet", None)):
            raise RuntimeError("gmqtt changed: no _handle_qos_1_publish_packet to take over")
        # gmqtt's _handle_publish_packet calls this with (mid, payload, topic, properties) for each QoS 1 PUBLISH.
        handler._handle_qos_1_publish_packet = partial(self._on_publish, client)
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
        """Waits (within the grace period) until every received message is settled.

        After the writers drained, whatever is still queued (or still waiting for room in the queue) will not be
        written: it is settled as not durable.
        """
        deadline = self._life.deadline()
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._life.drained.wait(), timeout)
        while self._inflight > 0 and not self._life.past_deadline():
            self._pipeline.abandon()
            await asyncio.sleep(0.005)
        # A settled message's PUBACK is gathered at once; `run` then flushes what _Client gathered.
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

    def _on_publish(self, client: _Client, mid: int, payload: bytes, topic: str, properties: dict[str, Any]) -> None:
        received_at = self._clock()
        if not self._accepting:
            return  # never acknowledged: the broker redelivers it to the next session
        self._inflight += 1
        # Only a topic ending in /status can be one (the regex is left to the rare status message).
        parsed = parse_topic(topic) if topic.endswith("/status") else None
        if parsed is not None and parsed.kind == "status":
            self._metrics.received_status.inc()
            retained = bool(properties.get("retain"))
            self._spawn(self._on_status(client, mid, parsed.serial, payload, retained, received_at))
            return
        self._metrics.received_readings.inc()
        delivery = Delivery(Envelope(topic, payload, received_at), client.on_settled, mid)
        if not self._pipeline.deliver(delivery):
            self._spawn(self._wait_for_room(delivery))

    def _settled(self, client: _Client, delivery: Delivery, durable: bool) -> None:
        self._inflight -= 1
        if durable:
            client.acknowledge(delivery.token)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_for_room(self, delivery: Delivery) -> None:
        try:
            await self._pipeline.enqueue(delivery)
        except BaseException:
            delivery.settle(False)
            raise

    async def _on_status(
        self, client: _Client, mid: int, serial: str, payload: bytes, retained: bool, received_at: datetime
    ) -> None:
        try:
            durable = True
            if self._status is not None:
                durable = await self._status.submit(serial, payload, retained=retained, received_at=received_at)
        finally:
            self._inflight -= 1
        if durable:
            client.acknowledge(mid)
