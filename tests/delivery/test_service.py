"""The delivery service as it runs: one TaskGroup, real database, health endpoints and Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg

from processors.delivery.logs import JsonFormatter
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.service import Readiness, serve
from processors.delivery.settings import DeliverySettings
from processors.health import HealthServer
from tests import factories
from tests.delivery.conftest import add_alert, add_notification
from tests.delivery.receivers import Inbox

Conn = psycopg.Connection[Any]
Team = tuple[factories.Patient, dict[str, factories.Provider]]


def service_settings(org: factories.Organization, inbox: Inbox, **extra: Any) -> DeliverySettings:
    return DeliverySettings(
        delivery_organizations=(org.id,),
        delivery_metrics_port=0,
        delivery_poll_interval_s=0.05,
        delivery_backlog_interval_s=0.1,
        delivery_escalation_interval_s=0.1,
        smtp_port=inbox.port,
        **extra,
    )


async def wait_for(predicate: Any) -> None:
    """Polls `predicate` (e.g. a database query) for up to 10 s."""
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_serves_delivers_and_exports_metrics_until_stopped(
    db: Conn, org: factories.Organization, care_team: Team, inbox: Inbox
) -> None:
    patient, team = care_team
    nid, _ = add_notification(db, patient, team["nurse"].user_id, scheduled_for=datetime.now(UTC))
    add_alert(db, patient)
    stop = asyncio.Event()
    servers: list[HealthServer] = []
    metrics = DeliveryMetrics()
    task = asyncio.create_task(
        serve(service_settings(org, inbox), stop=stop, metrics=metrics, health=servers, handle_signals=False)
    )
    try:
        await wait_for(lambda: bool(servers) and servers[0].started.is_set())

        def delivered() -> bool:
            row = db.execute("SELECT status::text FROM notifications WHERE id = %s", (nid,)).fetchone()
            return row == ("sent",)

        await wait_for(delivered)
        base = f"http://127.0.0.1:{servers[0].port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            statuses: list[int] = []
            for _ in range(100):
                async with http.get(base + "/readyz") as r:
                    statuses.append(r.status)
                if r.status == 200:
                    break
                await asyncio.sleep(0.05)
            assert statuses[-1] == 200
            async with http.get(base + "/metrics") as r:
                text = await r.text()
        assert 'delivery_attempts_total{channel="in_app",outcome="sent"} 1.0' in text
        assert 'alerts_raised_total{retrospective="false",severity="critical"} 1.0' in text
        assert 'alerts_unresolved{severity="critical",status="open"} 1.0' in text
        assert "delivery_backlog_deliveries" in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def test_readiness_needs_recent_database_contact() -> None:
    now = [0.0]
    ready = Readiness(stale_s=30, clock=lambda: now[0])
    assert ready() == (False, "starting")
    ready.ok()
    assert ready() == (True, "ok")
    ready.failed("ConnectionRefusedError")
    now[0] = 31
    ok, why = ready()
    assert not ok and "ConnectionRefusedError" in why


def test_json_log_lines_carry_no_debug_values() -> None:
    formatter = JsonFormatter()
    info = logging.LogRecord("x", logging.INFO, __file__, 1, "delivery %s dead after %d attempts", ("d1", 3), None)
    debug = logging.LogRecord("x", logging.DEBUG, __file__, 1, "payload %s", ({"value": 86.4},), None)
    line = json.loads(formatter.format(info))
    assert line["message"] == "delivery d1 dead after 3 attempts" and line["level"] == "INFO"
    assert json.loads(formatter.format(debug))["message"] == "payload %s"
