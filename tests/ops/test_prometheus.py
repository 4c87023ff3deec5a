"""A real Prometheus (Debian's package) on loopback scrapes a running ingest, a running delivery service, a
running processors clock and a running Faust processors worker, and answers queries for their metrics."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.settings import IngestSettings
from tests import factories
from tests.conftest import MqttDeviceFactory
from tests.delivery.conftest import add_notification
from tests.ingest.harness import ROOT, IngestProcess, end_session, free_port, message, publish, reading
from tests.processors.faust_harness import PARTITIONS, FaustRun, create_topic, delete_topics, new_run_id

Conn = psycopg.Connection[Any]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status), r.read()
    except OSError:
        return 0, b""


async def _until(check: Any, what: str, seconds: float = 30.0) -> Any:
    for _ in range(int(seconds / 0.25)):
        result = await asyncio.to_thread(check)
        if result:
            return result
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not reached within {seconds}s")


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`python <args>` from the repository root, its stderr kept for `_stop`."""
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM, then its stderr once it exited cleanly (killed after 20 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err.decode()[-2000:]
    return err.decode()


class Prometheus:
    def __init__(self, directory: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self._log = (directory / "prometheus.log").open("wb")
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("the prometheus binary is missing: run scripts/install.sh (Debian package 'prometheus')")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        status, body = _get(f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if status != 200:
            return []
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def ready(self) -> bool:
        return _get(f"http://127.0.0.1:{self.port}/-/ready")[0] == 200

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def delivery_service(org: factories.Organization) -> Iterator[int]:
    """`python -m processors.delivery` for this test's organization; yields its metrics port."""
    port = free_port()
    env = {
        **os.environ,
        "DELIVERY_ORGANIZATIONS": json.dumps([str(org.id)]),
        "DELIVERY_METRICS_PORT": str(port),
        "DELIVERY_POLL_INTERVAL_S": "0.2",
        "DELIVERY_BACKLOG_INTERVAL_S": "0.5",
        "DELIVERY_ESCALATION_INTERVAL_S": "0.5",
    }
    proc = _start(["-m", "processors.delivery", "--log-format", "json"], env)
    try:
        yield port
    finally:
        err = _stop(proc)
        # JSON log lines only.
        assert all(json.loads(line) for line in err.splitlines())


@pytest.fixture
def processors_clock(org: factories.Organization) -> Iterator[int]:
    """`python -m processors clock` ticking this test's organization; yields its metrics port."""
    port = free_port()
    env = {
        **os.environ,
        "PROCESSOR_TICK_ORGANIZATIONS": json.dumps([str(org.id)]),
        "PROCESSOR_TICK_INTERVAL_S": "0.5",
        "PROCESSOR_CLOCK_METRICS_PORT": str(port),
    }
    proc = _start(["-m", "processors", "clock", "--log-format", "json"], env)
    try:
        yield port
    finally:
        err = _stop(proc)
        # JSON log lines only (the clock logs its start and stop at INFO).
        lines = err.splitlines()
        assert lines
        assert all(json.loads(line)["logger"] for line in lines)


@pytest.fixture
async def faust_worker(tmp_path: Path) -> AsyncIterator[int]:
    """`python -m processors faust worker` on a topic of its own; yields its metrics port (started first: it
    joins its group while the other services start)."""
    port = free_port()
    (tmp_path / "faust").mkdir()
    run = FaustRun(new_run_id("prometheus"), tmp_path / "faust", {"PROCESSOR_FAUST_METRICS_PORT": str(port)})
    await create_topic(run.topic)
    try:
        await run.start()
        yield port
    finally:
        if run.process is not None:
            assert await run.stop() == 0, run.log_tail()
        await delete_topics(run.run_id)


@pytest.fixture
async def ingest(
    mqtt_device: MqttDeviceFactory, ingest_settings: IngestSettings
) -> AsyncIterator[tuple[IngestProcess, factories.Device]]:
    device = mqtt_device()
    process = IngestProcess([device.serial]).start()
    try:
        await process.ready()
        yield process, device
    finally:
        process.stop()
        await end_session(ingest_settings, process.client_id)


async def test_prometheus_scrapes_the_running_services(
    faust_worker: int,
    db: Conn,
    org: factories.Organization,
    patient: factories.Patient,
    delivery_service: int,
    processors_clock: int,
    ingest: tuple[IngestProcess, factories.Device],
    ingest_settings: IngestSettings,
    tmp_path: Path,
) -> None:
    process, device = ingest
    # Monitored from now on (an assigned device): the clock's next passes visit it.
    factories.create_device(db, org.id, assign_to=patient)
    recipient = db.execute(
        "SELECT h.user_id FROM patient_provider_assignments a JOIN healthcare_providers h ON h.id = a.provider_id"
        " WHERE a.patient_id = %s LIMIT 1",
        (patient.id,),
    ).fetchone()
    assert recipient is not None
    add_notification(db, patient, recipient[0], scheduled_for=datetime.now(UTC))
    await publish(ingest_settings, device.serial, device.password, [message(factories.unique("m"), reading())])

    prometheus = Prometheus(
        tmp_path,
        {
            "ingest": process.metrics_port,
            "delivery": delivery_service,
            "processors-clock": processors_clock,
            "processors-faust": faust_worker,
        },
    )
    try:
        await _until(prometheus.ready, "prometheus ready")
        up = await _until(lambda: prometheus.query("up == 1"), "the targets up")
        await _until(lambda: len(prometheus.query("up == 1")) == 4, "the four targets up")
        assert {r["metric"]["job"] for r in prometheus.query("up == 1")} == {
            "ingest",
            "delivery",
            "processors-clock",
            "processors-faust",
        }, up

        sent = await _until(
            lambda: prometheus.query('delivery_attempts_total{channel="in_app",outcome="sent"} > 0'),
            "the delivery scraped",
        )
        assert float(sent[0]["value"][1]) == 1.0
        received = await _until(
            lambda: prometheus.query('sum(ingest_messages_received_total{kind="readings"}) > 0'), "the reading scraped"
        )
        assert float(received[0]["value"][1]) >= 1.0
        # A dashboard query evaluates against the scraped data.
        backlog = await _until(lambda: prometheus.query("sum by (state) (delivery_backlog_deliveries)"), "backlog")
        assert {r["metric"]["state"] for r in backlog} == {"pending", "sending", "due"}
        # The clock ticked this organization's one patient (its passes are scraped as they complete).
        ticks = await _until(lambda: prometheus.query('processors_ticks_total{job="processors-clock"} >= 2'), "ticks")
        assert float(ticks[0]["value"][1]) >= 2
        patients = await _until(
            lambda: prometheus.query('processors_tick_patients_total{job="processors-clock"} > 0'), "a patient ticked"
        )
        assert float(patients[0]["value"][1]) >= 1
        stale = prometheus.query('time() - processors_last_tick_timestamp_seconds{job="processors-clock"}')
        assert float(stale[0]["value"][1]) < 30
        # The Faust worker joined its group: all partitions of its topic are its own.
        assigned = await _until(
            lambda: prometheus.query('processors_partitions_assigned{job="processors-faust"} > 0'), "faust assigned"
        )
        assert float(assigned[0]["value"][1]) == PARTITIONS
    finally:
        prometheus.stop()
