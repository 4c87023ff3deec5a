"""Helpers for ingest's end-to-end tests: the service as a real subprocess, device publishers, a pausable
loopback TCP proxy in front of PostgreSQL, and payload builders."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import gmqtt
import paho.mqtt.client as paho
import psycopg
from gmqtt.mqtt.constants import MQTTv50
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from ingest.settings import IngestSettings
from tests.factories import Patient

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reading(
    value: float = 72, *, type_: str = "heart_rate", unit: str = "/min", at: datetime | None = None
) -> dict[str, Any]:
    at = at or datetime.now(UTC) - timedelta(minutes=1)
    return {"type": type_, "value": value, "unit": unit, "measured_at": at.isoformat()}


def message(message_id: str, *readings: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"message_id": message_id, "readings": list(readings), **extra}).encode()


async def eventually(check: Callable[[], bool], seconds: float = 20.0, what: str = "condition") -> None:
    """Polls `check` until it holds, or fails the test after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {seconds}s")
        await asyncio.sleep(0.1)


class IngestProcess:
    """`python -m ingest serve` in a subprocess with its own client id, topics and metrics port."""

    def __init__(self, serials: Iterable[str], *, client_id: str | None = None, **env: str | int | float) -> None:
        self.client_id = client_id or f"test-ingest-{secrets.token_hex(4)}"
        self.metrics_port = free_port()
        serials = list(serials)
        self.env = {
            "PROCESSOR_TRANSPORT": "none",
            "INGEST_MQTT_CLIENT_ID": self.client_id,
            "INGEST_MQTT_SESSION_EXPIRY_S": "300",
            "INGEST_MQTT_READINGS_FILTERS": json.dumps([f"devices/{s}/readings" for s in serials]),
            "INGEST_MQTT_STATUS_FILTERS": json.dumps([f"devices/{s}/status" for s in serials]),
            "INGEST_METRICS_PORT": str(self.metrics_port),
            "INGEST_BATCH_MAX_AGE_S": "0.02",
            "INGEST_SHUTDOWN_GRACE_S": "5",
            "INGEST_DB_TIMEOUT_S": "3",
            "INGEST_DB_RETRY_MAX_S": "1",
            "INGEST_RECONNECT_MAX_S": "2",
            "INGEST_RELAY_LEASE_S": "1",
            "INGEST_RELAY_SCAN_INTERVAL_S": "0.5",
        }
        self.env.update({k.upper(): str(v) for k, v in env.items()})
        self._log = tempfile.NamedTemporaryFile(prefix="ingest-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> IngestProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingest", "serve"],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    async def get(self, path: str) -> tuple[int, str]:
        return await asyncio.to_thread(self._get, path)

    async def ready(self, seconds: float = 20.0) -> IngestProcess:
        """Waits until /readyz says ready (connected to the broker, subscribed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"ingest exited with {self.proc.returncode}:\n{self.log[-3000:]}")
            with contextlib.suppress(OSError):
                if (await self.get("/readyz"))[0] == 200:
                    await asyncio.sleep(0.3)  # the SUBACK follows the CONNACK
                    return self
            if loop.time() > deadline:
                raise AssertionError(f"ingest not ready within {seconds}s:\n{self.log[-3000:]}")
            await asyncio.sleep(0.1)

    async def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on /metrics (0 when absent)."""
        _, text = await self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


async def end_session(settings: IngestSettings, client_id: str) -> None:
    """Removes a test's persistent MQTT session from the broker (clean start, session expiry 0)."""
    client = gmqtt.Client(client_id, clean_session=True, session_expiry_interval=0)
    client.set_auth_credentials(settings.mqtt_ingest_user, settings.mqtt_ingest_password.get_secret_value())
    with contextlib.suppress(Exception):
        await client.connect(settings.mqtt_host, settings.mqtt_port, version=MQTTv50)
        await client.disconnect()


class Publisher:
    """A device's MQTT connection (paho, MQTT 3.1.1); `publish` returns once the broker acknowledged each message."""

    def __init__(self, settings: IngestSettings, serial: str, password: str) -> None:
        self.serial = serial
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pub-{serial}-{secrets.token_hex(3)}", protocol=paho.MQTTv311
        )
        self._client.username_pw_set(serial, password)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._settings = settings

    def __enter__(self) -> Publisher:
        self._client.connect(self._settings.mqtt_host, self._settings.mqtt_port)
        self._client.loop_start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, payloads: Iterable[bytes], *, kind: str = "readings", retain: bool = False) -> None:
        infos = [self._client.publish(f"devices/{self.serial}/{kind}", p, qos=1, retain=retain) for p in payloads]
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(timeout=30)


async def publish(settings: IngestSettings, serial: str, password: str, payloads: list[bytes], **kw: Any) -> None:
    def run() -> None:
        with Publisher(settings, serial, password) as publisher:
            publisher.publish(payloads, **kw)

    await asyncio.to_thread(run)


class TcpProxy:
    """A loopback TCP proxy (run in the test's event loop) that can pause traffic or drop and refuse connections:
    a stand-in for a stalled or unreachable PostgreSQL that disturbs no one else's tests."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port or self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def refuse(self) -> None:
        """Closes the listener and every proxied connection: the database looks unreachable."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.resume()
        await self.refuse()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.transport.abort()
            self._writers.discard(sink)


def alerts(db: psycopg.Connection[Any], patient: Patient) -> list[tuple[Any, ...]]:
    """The patient's alerts as (direction, severity, value)."""
    return db.execute(
        "SELECT direction::text, severity::text, value FROM vital_alerts WHERE patient_id = %s", (patient.id,)
    ).fetchall()
