"""The broker admits only known clients, and a device may publish only under its own topics."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ingest import provisioning
from ingest.broker_auth import CredentialError, hash_password, render_acl, render_password_file, verify_password
from ingest.broker_sync import broker_users, sync_broker
from ingest.settings import IngestSettings
from tests import mqtt_probe
from tests.conftest import MqttDeviceFactory
from tests.factories import Organization

NOT_AUTHORIZED = 5  # MQTT 3.1.1 CONNACK return code
BAD_CREDENTIALS = 4


def test_anonymous_clients_are_refused(ingest_settings: IngestSettings) -> None:
    code = mqtt_probe.connack_code(ingest_settings.mqtt_host, ingest_settings.mqtt_port, None, None)
    assert code == NOT_AUTHORIZED


def test_a_wrong_password_is_refused(ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory) -> None:
    device = mqtt_device()
    host, port = ingest_settings.mqtt_host, ingest_settings.mqtt_port
    assert mqtt_probe.connack_code(host, port, device.serial, device.password) == 0
    assert mqtt_probe.connack_code(host, port, device.serial, device.password + "x") in {
        BAD_CREDENTIALS,
        NOT_AUTHORIZED,
    }
    assert mqtt_probe.connack_code(host, port, "no-such-device", device.password) in {BAD_CREDENTIALS, NOT_AUTHORIZED}


class Recorder:
    """A paho MQTT 5 client that records what it receives and the PUBACK reason codes of what it publishes."""

    def __init__(self, settings: IngestSettings, username: str, password: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.acks: dict[int, int] = {}
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_publish = self._on_publish
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()
        assert self.connected.wait(5)

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Properties) -> None:
        self.acks[mid] = reason.value

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_device_can_publish_only_under_its_own_topics(
    ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory
) -> None:
    a, b = mqtt_device(), mqtt_device()
    watcher = Recorder(
        ingest_settings, ingest_settings.mqtt_ingest_user, ingest_settings.mqtt_ingest_password.get_secret_value()
    )
    watcher.client.subscribe([(f"devices/{a.serial}/#", 1), (f"devices/{b.serial}/#", 1)])
    assert watcher.subscribed.wait(5)
    device = Recorder(ingest_settings, a.serial, a.password)
    try:
        assert device.publish(f"devices/{b.serial}/readings", b"spoofed") == 135  # not authorized
        assert device.publish(f"devices/{a.serial}/elsewhere", b"stray") == 135
        assert device.publish(f"devices/{a.serial}/readings", b"genuine") == 0
        deadline = time.monotonic() + 5
        while not watcher.received and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # anything denied would have arrived by now, ahead of the genuine message
        assert watcher.received == [(f"devices/{a.serial}/readings", b"genuine")]
    finally:
        device.close()
        watcher.close()


def test_a_device_subscribing_to_everything_receives_nothing_of_others(
    ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory
) -> None:
    # Mosquitto grants the subscription but checks read access per message, so nothing is ever delivered.
    a, b = mqtt_device(), mqtt_device()
    snoop = Recorder(ingest_settings, a.serial, a.password)
    watcher = Recorder(
        ingest_settings, ingest_settings.mqtt_ingest_user, ingest_settings.mqtt_ingest_password.get_secret_value()
    )
    snoop.client.subscribe("#", qos=1)
    watcher.client.subscribe(f"devices/{b.serial}/readings", qos=1)
    assert snoop.subscribed.wait(5) and watcher.subscribed.wait(5)
    publisher = Recorder(ingest_settings, b.serial, b.password)
    try:
        assert publisher.publish(f"devices/{b.serial}/readings", b"private") == 0
        deadline = time.monotonic() + 5
        while not watcher.received and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert watcher.received == [(f"devices/{b.serial}/readings", b"private")]
        assert [t for t, _ in snoop.received if t.startswith("devices/")] == []
    finally:
        for client in (publisher, snoop, watcher):
            client.close()


def test_revoked_and_rotated_credentials_stop_working_without_a_restart(
    db: psycopg.Connection[Any], ingest_settings: IngestSettings, mqtt_device: MqttDeviceFactory
) -> None:
    host, port = ingest_settings.mqtt_host, ingest_settings.mqtt_port
    device = mqtt_device()
    new_password = provisioning.rotate_credentials(db, serial=device.serial)
    sync_broker(ingest_settings)
    mqtt_probe.wait_until(host, port, device.serial, device.password, accepted=False)
    assert mqtt_probe.connack_code(host, port, device.serial, new_password) == 0

    provisioning.revoke_device(db, serial=device.serial)
    sync_broker(ingest_settings)
    mqtt_probe.wait_until(host, port, device.serial, new_password, accepted=False)


def test_password_hashes_are_mosquitto_pbkdf2_sha512() -> None:
    hashed = hash_password("s3cret", salt=b"0123456789ab", iterations=101)
    assert hashed.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)
    assert not verify_password("s3cret", "$6$not$mosquitto")


@pytest.mark.parametrize("serial", ["ab", "has space", "a/b", "plus+", "hash#", "x" * 65])
def test_serials_unsafe_for_topics_are_refused(db: psycopg.Connection[Any], org: Organization, serial: str) -> None:
    with pytest.raises(CredentialError):
        provisioning.add_device(db, organization_id=org.id, serial=serial, kind="scale")
    assert db.execute("SELECT count(*) FROM devices WHERE serial = %s", (serial,)).fetchone() == (0,)


def test_the_acl_grants_devices_by_pattern_so_its_size_does_not_grow_with_the_fleet(
    ingest_settings: IngestSettings,
) -> None:
    """Mosquitto re-reads the ACL on every reload in time quadratic in its user blocks (seconds of broker stall
    at 10k devices): the ACL of 10,000 devices is the ACL of one."""
    one = render_acl(broker_users(ingest_settings, [("DEV-000001", "$7$hash")]))
    many = render_acl(broker_users(ingest_settings, [(f"DEV-{i:06d}", "$7$hash") for i in range(10_000)]))
    assert one == many
    assert "pattern write devices/%u/readings\npattern write devices/%u/status\n" in many
    assert "DEV-" not in many


def test_a_device_whose_serial_is_a_service_users_name_is_kept_off_the_broker(ingest_settings: IngestSettings) -> None:
    service = ingest_settings.mqtt_ingest_user
    users = broker_users(ingest_settings, [(service, "$7$device"), ("DEV-000001", "$7$hash")])
    names = [u.username for u in users]
    assert names.count(service) == 1 and "DEV-000001" in names
    ingest = next(u for u in users if u.username == service)
    assert verify_password(ingest_settings.mqtt_ingest_password.get_secret_value(), ingest.password_hash)
    assert render_password_file(users).count(f"{service}:") == 1


def test_a_revoked_serial_is_denied_even_though_the_pattern_would_grant_it(ingest_settings: IngestSettings) -> None:
    acl = render_acl(broker_users(ingest_settings, []), revoked=["DEV-000002"])
    assert "\nuser DEV-000002\ntopic deny devices/DEV-000002/#\n" in acl
