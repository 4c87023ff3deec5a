"""A private, throw-away copy of the system for one benchmark run: its own database (fresh migrations, so every
table starts empty) and its own Mosquitto on another loopback port, both removed at the end. Nothing the
developers' services hold is touched, and the run's numbers never mix with test data.

Only the sandbox's broker may have a load-generator user (`Sandbox.loadgen`): one identity allowed to publish on
every device's readings topic, for the fleet's multiplexed mode. The project's broker never gets one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

from device_simulators.credentials import Fleet
from device_simulators.device import DeviceKind
from device_simulators.fleet import Identity
from device_simulators.provision import provision_fleet
from device_simulators.publisher import Broker
from ingest.broker_auth import BrokerUser, acl_block, hash_password, new_secret, verify_password, write_atomically
from ingest.broker_sync import reload_broker, sync_broker
from ingest.settings import IngestSettings
from migrations.runner import migrate
from migrations.settings import MigrationSettings

ROOT = Path(__file__).resolve().parents[2]
LOADGEN_USER = "bench-loadgen"
LOADGEN_TOPICS = ("devices/+/readings",)


@dataclass(frozen=True, slots=True)
class Sandbox:
    database: str
    state_dir: Path
    broker: Broker
    migration: MigrationSettings
    ingest: IngestSettings

    @property
    def env(self) -> dict[str, str]:
        """The environment for a service started inside the sandbox (e.g. `python -m ingest …`)."""
        return {
            **os.environ,
            "POSTGRES_DB": self.database,
            "MQTT_HOST": self.broker.host,
            "MQTT_PORT": str(self.broker.port),
            "RPM_STATE_DIR": str(self.state_dir),
        }

    async def connect(self, *, owner: bool = False) -> asyncpg.Connection:
        """An asyncpg connection to the sandbox database as the ingest role (or the owner)."""
        user, password = (
            (self.migration.postgres_admin_user, self.migration.postgres_admin_password)
            if owner
            else (self.ingest.postgres_ingest_user, self.ingest.postgres_ingest_password)
        )
        return await asyncpg.connect(
            host=self.ingest.postgres_host,
            port=self.ingest.postgres_port,
            database=self.database,
            user=user,
            password=password.get_secret_value(),
        )

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.migration.admin_dsn(self.database), autocommit=True)

    def provision(self, prefix: str, count: int, kind: DeviceKind = DeviceKind.MULTI) -> Fleet:
        """`count` devices assigned to `count` patients; the sandbox broker accepts them when this returns."""
        with self.admin() as conn:
            _, fleet = provision_fleet(conn, prefix, count, self.broker, kind=kind)
        self.sync_broker()
        _wait_for_login(self.state_dir / "mosquitto" / "passwd", fleet.devices[-1].serial, fleet.devices[-1].password)
        time.sleep(0.3)  # the SIGHUP reload is asynchronous
        return fleet

    def loadgen(self) -> Identity:
        """The sandbox broker's load-generator user (created on first use): it may publish on every device's
        readings topic and nothing else. For `python -m device_simulators fleet --multiplex N` (MQTT_LOADGEN_*)."""
        secret = self.state_dir / "loadgen.secret"
        if not secret.exists():
            secret.touch(mode=0o600)
            secret.write_text(new_secret())
            self.sync_broker()
            _wait_for_login(self.state_dir / "mosquitto" / "passwd", LOADGEN_USER, secret.read_text())
            time.sleep(0.3)
        return Identity(LOADGEN_USER, secret.read_text())

    def sync_broker(self, *, reload: bool = True) -> None:
        """The registry's password file and ACL for the sandbox broker, plus the load-generator user if there is
        one, then a reload."""
        broker_dir = self.ingest.broker_dir
        if not broker_dir.is_relative_to(self.state_dir):
            raise RuntimeError(f"{broker_dir} is not the sandbox's broker")
        sync_broker(self.ingest, reload=False)
        secret = self.state_dir / "loadgen.secret"
        if secret.exists():
            user = BrokerUser(LOADGEN_USER, hash_password(secret.read_text()), write=LOADGEN_TOPICS)
            passwd, acl = broker_dir / "passwd", broker_dir / "acl"
            write_atomically(passwd, passwd.read_text() + f"{user.username}:{user.password_hash}\n")
            write_atomically(acl, acl.read_text() + "\n".join(acl_block(user)) + "\n")
        if reload:
            reload_broker(self.ingest)


def _wait_for_login(passwd: Path, serial: str, password: str, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for line in passwd.read_text().splitlines():
            user, _, hashed = line.partition(":")
            if user == serial and verify_password(password, hashed):
                return
        time.sleep(0.1)
    raise TimeoutError(f"{serial} never reached the sandbox broker's password file")


def _start_broker(box: Sandbox) -> int:
    """Renders the project's Mosquitto template for the sandbox (same settings, other port and folder), writes
    its password file and ACL from the sandbox registry, starts it, and returns its pid."""
    base = box.state_dir / "mosquitto"
    (base / "data").mkdir(parents=True)
    template = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf.template").read_text()
    conf = base / "mosquitto.conf"
    conf.write_text(
        template.replace("@STATE@", str(base))
        .replace("@HOST@", box.broker.host)
        .replace("@PORT@", str(box.broker.port))
    )
    box.sync_broker(reload=False)
    subprocess.run(["chown", "-R", "mosquitto:mosquitto", str(base)], check=True)
    base.chmod(0o750)
    subprocess.run([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf), "-d"], check=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((box.broker.host, box.broker.port), timeout=1):
                pass
            pidfile = base / "mosquitto.pid"
            if pidfile.exists() and pidfile.read_text().strip():
                return int(pidfile.read_text())
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the sandbox broker did not start")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def sandbox(port: int | None = None) -> Iterator[Sandbox]:
    """Creates the sandbox, yields it, and removes the database, broker and state whatever happens.

    The broker listens on `port`, by default a free loopback port (several sandboxes may run at once).
    """
    port = port or _free_port()
    run = secrets.token_hex(3)
    database = f"rpm_bench_{run}"
    base = MigrationSettings()
    state_dir = Path(os.environ.get("RPM_STATE_DIR", "/var/tmp/rpm-telemetry")) / f"bench-{run}"
    with psycopg.connect(base.admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    box = Sandbox(
        database=database,
        state_dir=state_dir,
        broker=Broker("127.0.0.1", port),
        migration=base,
        ingest=IngestSettings(postgres_db=database, mqtt_port=port, rpm_state_dir=state_dir),
    )
    broker: int | None = None
    try:
        migrate(base.admin_dsn(database), base.roles())
        state_dir.mkdir(parents=True)
        state_dir.chmod(0o755)
        broker = _start_broker(box)
        yield box
    finally:
        if broker is not None:
            _stop(broker)
        shutil.rmtree(state_dir, ignore_errors=True)
        with psycopg.connect(base.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
