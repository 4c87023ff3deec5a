"""Devices over TLS: the password listener (TLS >= 1.2) and the mutual-TLS listener (certificate CN = serial, CRL).

Plain-listener access (anonymous, wrong password, foreign topics, snooping, rotation, revocation) is covered by
tests/ingest/test_broker_access.py; here the same log-in and ACL are checked through TLS, plus what only TLS has:
plaintext to a TLS port, old protocol versions, client certificates of another CA, and revoked certificates.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest import provisioning
from ingest.broker_sync import sync_broker
from ingest.settings import IngestSettings
from tests import mqtt_probe
from tests.conftest import MqttDeviceFactory

ROOT = Path(__file__).resolve().parents[2]
NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87
ACCEPTED = {0, 16}  # success, "no matching subscribers"


class TlsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    rpm_state_dir: Path = Path("/var/tmp/rpm-telemetry")
    rpm_tls_dir: Path | None = None
    mqtt_host: str = "127.0.0.1"
    mqtt_tls_port: int = 18883
    mqtt_mtls_port: int = 18884

    @property
    def tls_dir(self) -> Path:
        return self.rpm_tls_dir or self.rpm_state_dir / "tls"

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca" / "ca.crt"


@dataclass(frozen=True, slots=True)
class Certificate:
    key: Path
    crt: Path


def issue(serial: str, tls_dir: Path | None = None) -> Certificate:
    """A client certificate for `serial` from scripts/tls.sh (the project CA, or a CA made in `tls_dir`)."""
    env = None if tls_dir is None else {"RPM_TLS_DIR": str(tls_dir), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tls.sh"), "device", serial],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    ).stdout.split()
    return Certificate(Path(out[-2]), Path(out[-1]))


def revoke(serial: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "tls.sh"), "revoke", serial], check=True, cwd=ROOT)


@pytest.fixture(scope="module")
def tls() -> TlsSettings:
    settings = TlsSettings()
    for port in (settings.mqtt_tls_port, settings.mqtt_mtls_port):
        try:
            socket.create_connection((settings.mqtt_host, port), timeout=1).close()
        except OSError:
            pytest.skip(
                f"no TLS listener on {settings.mqtt_host}:{port}: the broker was started before its TLS config;"
                " restart it (bash scripts/mosquitto.sh down; bash scripts/mosquitto.sh up)"
            )
    return settings


def _context(tls: TlsSettings, cert: Certificate | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(tls.ca))
    if cert is not None:
        context.load_cert_chain(str(cert.crt), str(cert.key))
    return context


class Client:
    """A paho MQTT 5 client over TLS that records PUBACK reason codes, deliveries and disconnects."""

    def __init__(
        self, tls: TlsSettings, port: int, *, cert: Certificate | None = None, login: tuple[str, str] | None = None
    ) -> None:
        self.acks: dict[int, int] = {}
        self.received: list[tuple[str, bytes]] = []
        self.connack: int | None = None
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.tls_set_context(_context(tls, cert))
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.connect(tls.mqtt_host, port)
        self.client.loop_start()
        self.connected.wait(5)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Properties | None) -> None:
        self.connack = reason.value
        self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Properties) -> None:
        self.acks[mid] = reason.value

    def publish(self, topic: str, payload: bytes) -> int | None:
        """The PUBACK reason code, or None when the broker closed the connection instead."""
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline and self.client.is_connected():
            time.sleep(0.01)
        return self.acks.get(info.mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def _handshake(tls: TlsSettings, port: int, context: ssl.SSLContext) -> None:
    """Completes a TLS handshake and one read, so a certificate the broker rejects after the handshake shows up."""
    with (
        socket.create_connection((tls.mqtt_host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=tls.mqtt_host) as conn,
    ):
        conn.sendall(b"\xc0\x00")  # PINGREQ before CONNECT: the broker must close, but the TLS layer answers first
        conn.recv(1)


def mqtt_probe_over_tls(tls: TlsSettings, port: int, username: str, password: str) -> int:
    """CONNECT over TLS without a client certificate; the CONNACK return code."""

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    body = field(b"MQTT") + bytes([4, 0xC2]) + (10).to_bytes(2, "big")  # 3.1.1, user, password, clean
    body += field(b"tls-probe") + field(username.encode()) + field(password.encode())
    assert len(body) < 128
    packet = b"\x10" + bytes([len(body)]) + body
    with (
        socket.create_connection((tls.mqtt_host, port), timeout=5) as raw,
        _context(tls).wrap_socket(raw, server_hostname=tls.mqtt_host) as conn,
    ):
        conn.sendall(packet)
        reply = conn.recv(4)
        if len(reply) < 4:
            raise ConnectionError("closed before CONNACK")
        return reply[3]


# --- the password listener -------------------------------------------------------------------------------------


def test_a_device_logs_in_over_tls_and_wrong_passwords_are_refused(
    tls: TlsSettings, mqtt_device: MqttDeviceFactory, clients: list[Client]
) -> None:
    device = mqtt_device()
    good = Client(tls, tls.mqtt_tls_port, login=(device.serial, device.password))
    bad = Client(tls, tls.mqtt_tls_port, login=(device.serial, device.password + "x"))
    clients += [good, bad]
    assert good.connack == 0
    assert good.publish(f"devices/{device.serial}/readings", b"{}") in ACCEPTED
    assert bad.connack is not None and bad.connack >= 128


def test_rotated_and_revoked_credentials_are_refused_over_tls(
    db: psycopg.Connection[Any],
    tls: TlsSettings,
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    clients: list[Client],
) -> None:
    device = mqtt_device()
    new_password = provisioning.rotate_credentials(db, serial=device.serial)
    sync_broker(ingest_settings)
    mqtt_probe.wait_until(
        ingest_settings.mqtt_host, ingest_settings.mqtt_port, device.serial, new_password, accepted=True
    )
    old = Client(tls, tls.mqtt_tls_port, login=(device.serial, device.password))
    new = Client(tls, tls.mqtt_tls_port, login=(device.serial, new_password))
    clients += [old, new]
    assert old.connack is not None and old.connack >= 128
    assert new.connack == 0

    provisioning.revoke_device(db, serial=device.serial)
    sync_broker(ingest_settings)
    mqtt_probe.wait_until(
        ingest_settings.mqtt_host, ingest_settings.mqtt_port, device.serial, new_password, accepted=False
    )
    revoked = Client(tls, tls.mqtt_tls_port, login=(device.serial, new_password))
    clients.append(revoked)
    assert revoked.connack is not None and revoked.connack >= 128


def test_plaintext_mqtt_to_a_tls_port_gets_no_connack(tls: TlsSettings, mqtt_device: MqttDeviceFactory) -> None:
    device = mqtt_device()
    for port in (tls.mqtt_tls_port, tls.mqtt_mtls_port):
        with pytest.raises((ConnectionError, OSError)):
            mqtt_probe.connack_code(tls.mqtt_host, port, device.serial, device.password)


def test_tls_older_than_1_2_is_refused(tls: TlsSettings) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(tls.ca))
    with warnings.catch_warnings():  # deprecated on purpose: this client plays an outdated device
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.0/1.1 at all
    for port in (tls.mqtt_tls_port, tls.mqtt_mtls_port):
        with pytest.raises(ssl.SSLError):
            _handshake(tls, port, old)
    current = ssl.create_default_context(cafile=str(tls.ca))
    current.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((tls.mqtt_host, tls.mqtt_tls_port), timeout=5) as raw,
        current.wrap_socket(raw, server_hostname=tls.mqtt_host) as conn,
    ):
        assert conn.version() == "TLSv1.2"


def test_the_broker_proves_itself_with_the_project_ca(tls: TlsSettings, tmp_path: Path) -> None:
    issue("stranger-ca-dev", tmp_path)  # makes another CA in tmp_path
    foreign = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.crt"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls, tls.mqtt_tls_port, foreign)


# --- the mutual-TLS listener -----------------------------------------------------------------------------------


def test_a_certificate_is_the_devices_identity_and_the_acl_still_applies(
    tls: TlsSettings, ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory, clients: list[Client]
) -> None:
    a, b = mqtt_device(), mqtt_device()
    watcher = Client(
        tls,
        tls.mqtt_tls_port,
        login=(ingest_settings.mqtt_ingest_user, ingest_settings.mqtt_ingest_password.get_secret_value()),
    )
    snoop = Client(tls, tls.mqtt_mtls_port, cert=issue(a.serial))
    device_b = Client(tls, tls.mqtt_mtls_port, cert=issue(b.serial))
    clients += [watcher, snoop, device_b]
    assert (watcher.connack, snoop.connack, device_b.connack) == (0, 0, 0)
    watcher.client.subscribe([(f"devices/{a.serial}/#", 1), (f"devices/{b.serial}/#", 1)])
    snoop.client.subscribe("#", qos=1)
    assert watcher.subscribed.wait(5) and snoop.subscribed.wait(5)

    assert snoop.publish(f"devices/{b.serial}/readings", b"spoofed") == NOT_AUTHORIZED
    assert snoop.publish(f"devices/{a.serial}/elsewhere", b"stray") == NOT_AUTHORIZED
    assert device_b.publish(f"devices/{b.serial}/readings", b"genuine") in ACCEPTED
    deadline = time.monotonic() + 5
    while not watcher.received and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # anything denied would have arrived by now, ahead of the genuine message
    assert watcher.received == [(f"devices/{b.serial}/readings", b"genuine")]
    assert [t for t, _ in snoop.received if t.startswith("devices/")] == []


def test_a_client_without_a_certificate_is_refused(tls: TlsSettings, mqtt_device: MqttDeviceFactory) -> None:
    device = mqtt_device()
    with pytest.raises(OSError):  # ssl.SSLError or a reset: the handshake fails either way
        _handshake(tls, tls.mqtt_mtls_port, _context(tls))
    # A password does not replace the certificate.
    with pytest.raises((ConnectionError, OSError)):
        mqtt_probe_over_tls(tls, tls.mqtt_mtls_port, device.serial, device.password)


def test_a_certificate_of_another_ca_is_refused(tls: TlsSettings, tmp_path: Path) -> None:
    forged = issue("forged-dev-1", tmp_path)  # same CN shape, signed by a CA the broker does not trust
    with pytest.raises(OSError):
        _handshake(tls, tls.mqtt_mtls_port, _context(tls, forged))


def test_a_revoked_certificate_is_refused(tls: TlsSettings) -> None:
    # The canary is revoked when the CA is made, so the running broker's CRL must already list it.
    canary = Certificate(tls.tls_dir / "devices" / "revoked-canary.key", tls.tls_dir / "devices" / "revoked-canary.crt")
    with pytest.raises(OSError):
        _handshake(tls, tls.mqtt_mtls_port, _context(tls, canary))


def test_revoking_a_device_ends_its_certificate_and_its_publishing(
    db: psycopg.Connection[Any],
    tls: TlsSettings,
    ingest_settings: IngestSettings,
    mqtt_device: MqttDeviceFactory,
    clients: list[Client],
) -> None:
    device = mqtt_device()
    cert = issue(device.serial)
    _handshake(tls, tls.mqtt_mtls_port, _context(tls, cert))
    connected = Client(tls, tls.mqtt_mtls_port, cert=cert)
    clients.append(connected)
    assert connected.publish(f"devices/{device.serial}/readings", b"before") in ACCEPTED

    provisioning.revoke_device(db, serial=device.serial)
    sync_broker(ingest_settings)  # its ACL entry is gone
    revoke(device.serial)  # its certificate is in the CRL; the broker reloads it
    deadline = time.monotonic() + 10
    code = connected.publish(f"devices/{device.serial}/readings", b"after")
    while code in ACCEPTED and time.monotonic() < deadline:
        time.sleep(0.1)
        code = connected.publish(f"devices/{device.serial}/readings", b"after")
    assert code in {NOT_AUTHORIZED, None}  # the open connection may stay, but publishes nothing
    with pytest.raises(OSError):
        _handshake(tls, tls.mqtt_mtls_port, _context(tls, cert))


def test_devices_revoke_puts_the_certificate_in_the_crl_and_the_broker_refuses_it_within_seconds(
    db: psycopg.Connection[Any],
    tls: TlsSettings,
    mqtt_device: MqttDeviceFactory,
    clients: list[Client],
) -> None:
    """`python -m ingest devices revoke` alone (no manual scripts/tls.sh revoke): the registry, the CRL and one
    broker reload, so the device's certificate no longer logs in over mutual TLS."""
    device = mqtt_device()
    cert = issue(device.serial)
    _handshake(tls, tls.mqtt_mtls_port, _context(tls, cert))
    connected = Client(tls, tls.mqtt_mtls_port, cert=cert)
    clients.append(connected)
    assert connected.connack == 0
    assert connected.publish(f"devices/{device.serial}/readings", b"before") in ACCEPTED

    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "devices", "revoke", device.serial],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{device.serial}: 1 client certificate(s) revoked" in done.stdout
    refused_after = None
    while refused_after is None and time.monotonic() - started < 10:
        try:
            _handshake(tls, tls.mqtt_mtls_port, _context(tls, cert))
            time.sleep(0.1)
        except OSError:
            refused_after = time.monotonic() - started
    assert refused_after is not None, "the revoked certificate still completes a handshake after 10 s"
    print(f"revoked certificate refused {refused_after:.2f} s after the command started")

    again = Client(tls, tls.mqtt_mtls_port, cert=cert)
    clients.append(again)
    assert again.connack != 0  # no MQTT session with the revoked certificate (None: the TLS layer closed first)
    # The connection opened before the revocation stays open (Mosquitto cannot drop it on reload), but its ACL entry
    # is gone: it publishes nothing.
    assert connected.publish(f"devices/{device.serial}/readings", b"after") in {NOT_AUTHORIZED, None}
    status = db.execute("SELECT status::text FROM devices WHERE serial = %s", (device.serial,)).fetchone()
    assert status == ("revoked",)
    index = (tls.tls_dir / "ca" / "index.txt").read_text()
    assert any(line.startswith("R\t") and line.endswith(f"/CN={device.serial}") for line in index.splitlines()), (
        "the certificate is revoked in the CA's index"
    )
