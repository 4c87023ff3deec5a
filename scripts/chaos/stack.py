"""A private copy of the system's services for fault injection: its own PostgreSQL cluster, Mosquitto and (when
asked) Kafka, on free loopback ports under a throw-away state folder, started with the project's own scripts.

Faults hit only these: the developers' shared services are never stopped, paused or restarted. Every process is
found by its pid file or as a child of a pid this module started; nothing is signalled by name.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from migrations.settings import MigrationSettings

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHARED_STATE = Path("/var/tmp/rpm-telemetry")


class StackError(Exception):
    retriable = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc (the postmaster's backends, for a pause)."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        try:
            text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except OSError:
            continue
        kids = [int(k) for k in text.split()]
        found.extend(kids)
        frontier.extend(kids)
    return found


@dataclass
class Stack:
    """Service state lives in `root`; `env` points the project's scripts and services at this stack."""

    root: Path
    pg_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    mtls_port: int = field(default_factory=free_port)
    kafka_port: int = field(default_factory=free_port)
    kafka_controller_port: int = field(default_factory=free_port)
    with_kafka: bool = False

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RPM_STATE_DIR": str(self.root),
            "POSTGRES_PORT": str(self.pg_port),
            "MQTT_PORT": str(self.mqtt_port),
            "MQTT_TLS_PORT": str(self.tls_port),
            "MQTT_MTLS_PORT": str(self.mtls_port),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka_port}",
            "KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
        }

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def _script(self, *args: str) -> None:
        done = subprocess.run(["bash", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    # --- lifecycle --------------------------------------------------------------------------------------------

    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._script("scripts/postgres.sh", "up")
        done = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "-m", "migrations", "up"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise StackError(f"migrations failed: {done.stderr[-2000:]}")
        self._script("scripts/mosquitto.sh", "up")
        if self.with_kafka:
            self._link_kafka_jars()
            self._script("scripts/kafka.sh", "up")

    def down(self) -> None:
        for script in ("scripts/kafka.sh", "scripts/mosquitto.sh") if self.with_kafka else ("scripts/mosquitto.sh",):
            with suppress(StackError):
                self._script(script, "down")
        self.pg_resume()
        if (self.pg_data / "PG_VERSION").exists():
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-m",
                 "immediate", "-w", "stop"],
                capture_output=True, check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def _link_kafka_jars(self) -> None:
        """Kafka's resolved jars are reused from the shared state folder (resolving them needs the network)."""
        (self.root / "kafka").mkdir(parents=True, exist_ok=True)
        for libs in (SHARED_STATE / "kafka").glob("libs-*"):
            target = self.root / "kafka" / libs.name
            if not target.exists():
                target.symlink_to(libs)

    # --- PostgreSQL -------------------------------------------------------------------------------------------

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres" / "data"

    def owner_dsn(self) -> str:
        settings = MigrationSettings(postgres_port=self.pg_port)
        return settings.admin_dsn()

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.owner_dsn(), autocommit=True)

    def postmaster(self) -> int:
        return int((self.pg_data / "postmaster.pid").read_text().split()[0])

    def pg_stop(self) -> None:
        """A clean, fast shutdown (pg_ctl -m fast): connections are closed, nothing acknowledged is lost."""
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.pg_data), "-m", "fast",
             "-w", "stop"],
            capture_output=True, check=True,
        )  # fmt: skip

    def pg_start(self) -> None:
        self._script("scripts/postgres.sh", "up")

    def pg_pause(self) -> None:
        """SIGSTOP to the postmaster and every backend: connections stay open and hang."""
        pid = self.postmaster()
        for p in [pid, *_children(pid)]:
            os.kill(p, signal.SIGSTOP)

    def pg_resume(self) -> None:
        try:
            pid = self.postmaster()
        except (OSError, ValueError, IndexError):
            return
        for p in [pid, *_children(pid)]:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)

    # --- Mosquitto and Kafka ----------------------------------------------------------------------------------

    def _pid(self, path: Path) -> int:
        return int(path.read_text().strip())

    @property
    def broker_pid(self) -> int:
        return self._pid(self.root / "mosquitto" / "mosquitto.pid")

    def broker_restart(self) -> None:
        """SIGTERM (Mosquitto saves its persistence file on the way out), then start again."""
        self._script("scripts/mosquitto.sh", "down")
        self._script("scripts/mosquitto.sh", "up")

    def broker_kill(self) -> None:
        """kill -9: whatever arrived since the last autosave is gone."""
        pid = self.broker_pid
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        (self.root / "mosquitto" / "mosquitto.pid").unlink(missing_ok=True)

    def broker_start(self) -> None:
        self._script("scripts/mosquitto.sh", "up")

    def kafka_restart(self) -> None:
        self._script("scripts/kafka.sh", "down")
        self._script("scripts/kafka.sh", "up")


@contextmanager
def stack(*, with_kafka: bool = False, root: Path | None = None) -> Iterator[Stack]:
    """A running private stack, removed afterwards whatever happens."""
    made = Stack(root or Path(f"/var/tmp/rpm-chaos-{secrets.token_hex(3)}"), with_kafka=with_kafka)
    try:
        made.up()
        yield made
    finally:
        made.down()
