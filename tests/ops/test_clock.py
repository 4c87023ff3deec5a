"""The processors clock (`python -m processors clock`) as it runs: ticks its tenants' patients, exports Prometheus
metrics and probes, and stops promptly on SIGTERM even with a tick stuck waiting for the database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

import aiohttp
import psycopg
import pytest

from migrations.settings import MigrationSettings
from processors.clock import ClockReadiness, serve
from processors.health import HealthServer
from processors.metrics import ProcessorMetrics
from processors.settings import ProcessorSettings
from processors.store import LOCK_CLASS, lock_key
from tests import factories
from tests.ingest.harness import ROOT, free_port

Conn = psycopg.Connection[Any]


def sample(metrics: ProcessorMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def wait_for(predicate: Any, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_readiness_needs_the_listener_and_recent_tick_progress() -> None:
    now = [100.0]
    listening = asyncio.Event()
    ready = ClockReadiness(listening, tick_interval_s=30, clock=lambda: now[0])
    assert ready() == (False, "not listening for changes (database unreachable?)")
    listening.set()
    assert ready() == (False, "no tick yet")
    ready.progress()
    now[0] += 90
    assert ready() == (True, "ok")
    ready.failed("last tick failed: ConnectionRefusedError")
    now[0] += 1
    ok, why = ready()
    assert not ok
    assert why == "no tick progress for 91 s (last tick failed: ConnectionRefusedError)"
    assert ClockReadiness(listening, tick_interval_s=0)() == (True, "ok")


async def test_the_clock_ticks_its_tenant_and_exports_what_it_did(
    db: Conn, org: factories.Organization, patient: factories.Patient
) -> None:
    # A device that never reports: the second tick after `silent_after` pages the care team (two members).
    factories.create_device(db, org.id, assign_to=patient)
    settings = ProcessorSettings(
        processor_tick_organizations=(org.id,),
        processor_tick_interval_s=0.3,
        processor_silent_after_s=1,
        processor_clock_metrics_port=0,
    )
    metrics = ProcessorMetrics()
    servers: list[HealthServer] = []
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop, metrics=metrics, health=servers, handle_signals=False))

    def paged() -> int:
        row = db.execute(
            "SELECT count(*) FROM notifications WHERE patient_id = %s AND type = 'device_offline'", (patient.id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    try:
        await wait_for(lambda: paged() == 2)
        await wait_for(lambda: bool(servers) and servers[0].started.is_set())
        base = f"http://127.0.0.1:{servers[0].port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                assert (r.status, await r.text()) == (200, "ok\n")
            async with http.get(base + "/metrics") as r:
                page = await r.text()
        assert "processors_ticks_total" in page
        assert "processors_tick_duration_seconds_bucket" in page
        assert sample(metrics, "processors_notifications_created_total") == 2
        ticks = sample(metrics, "processors_ticks_total")
        assert ticks >= 2
        # Only this test's tenant: one patient per pass.
        assert sample(metrics, "processors_tick_patients_total") >= ticks
        assert sample(metrics, "processors_tick_patients_total") <= ticks + 1
        assert sample(metrics, "processors_events_evaluated_total", kind="tick") == sample(
            metrics, "processors_tick_patients_total"
        )
        assert sample(metrics, "processors_last_tick_timestamp_seconds") > time.time() - 10
        assert sample(metrics, "processors_listening") == 1
        assert sample(metrics, "processors_errors_total", stage="tick") == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _waiting_for_lock(db: Conn, patient_id: Any) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
        (LOCK_CLASS, lock_key(patient_id) % 2**32),
    ).fetchone()
    return 0 if row is None else int(row[0])


@pytest.mark.parametrize("grace", [1.0])
async def test_sigterm_stops_a_clock_whose_tick_waits_for_the_database(
    db: Conn,
    org: factories.Organization,
    patient: factories.Patient,
    migration_settings: MigrationSettings,
    grace: float,
) -> None:
    factories.create_device(db, org.id, assign_to=patient)
    port = free_port()
    env = {
        **os.environ,
        "PROCESSOR_TICK_ORGANIZATIONS": json.dumps([str(org.id)]),
        "PROCESSOR_TICK_INTERVAL_S": "0.2",
        "PROCESSOR_STOP_GRACE_S": str(grace),
        "PROCESSOR_CLOCK_METRICS_PORT": str(port),
    }
    with psycopg.connect(migration_settings.admin_dsn(), autocommit=True) as holder:
        # Another process holds the patient: the clock's tick blocks in its advisory lock, inside its transaction.
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(patient.id)))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "processors",
            "clock",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await wait_for(lambda: _waiting_for_lock(db, patient.id) == 1, 30)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 10 * grace)
            except TimeoutError:
                pytest.fail(f"the clock did not stop within {10 * grace:.0f} s of SIGTERM")
            took = time.monotonic() - sent
            assert proc.returncode == 0, err.decode()[-2000:]
            assert took < 5 * grace, took
            # The server-side wait ended with the process: nothing of the tick is left behind.
            assert _waiting_for_lock(db, patient.id) == 0
            assert b"cancelling" in err
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, lock_key(patient.id)))
