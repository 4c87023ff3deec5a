"""From a breaching reading to a clinician and back: the processors' inline runner raises the episodes, the
dispatcher delivers the pages (signed webhook), the escalator pages the next role, people acknowledge and resolve
with the CLI, and the resolved rule opens a new episode on the next breach."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import psycopg
import pytest

from processors.alerts_cli import main as alerts
from processors.delivery.escalation import EscalationPolicy
from processors.delivery.escalator import Escalator
from processors.delivery.metrics import DeliveryMetrics
from processors.events import CommittedReading
from processors.inline import InlineProcessor
from tests.delivery.conftest import FakeClock, MakeDispatcher, add_webhook
from tests.delivery.receivers import HttpReceiver
from tests.processors.scenario import DIRECTORY, load
from tests.processors.scenario_db import create_world, insert_reading

Conn = psycopg.Connection[Any]


def insert(db: Conn, r: CommittedReading) -> None:
    db.execute(
        "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value,"
        " original_value, original_unit, measured_at, received_at, message_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (r.reading_id, r.organization_id, r.patient_id, r.device_id, r.vital_type_id, r.value, r.value, r.unit,
         r.measured_at, r.received_at, f"test:{r.reading_id}"),
    )  # fmt: skip


def episodes(db: Conn, patient_id: Any) -> list[tuple[Any, str, str, int]]:
    rows = db.execute(
        "SELECT v.id, t.code, v.status::text, v.escalation_level FROM vital_alerts v"
        " JOIN vital_types t ON t.id = v.vital_type_id WHERE v.patient_id = %s ORDER BY v.opened_at, t.code",
        (patient_id,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def test_breach_page_escalate_acknowledge_resolve_and_re_arm(
    db: Conn,
    pool: asyncpg.Pool,
    receiver: HttpReceiver,
    secret: str,
    make_dispatcher: MakeDispatcher,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = load(DIRECTORY / "hypertensive_crisis.yaml")
    world = create_world(db, spec)
    steps = [(step, world.reading(step)) for step, _ in list(world.events())[:4]]  # r1..r4: normal, then 186/124
    processor = InlineProcessor(pool, spec.config.engine())
    for step, _ in steps:
        insert_reading(db, world, step)
    await processor.deliver([reading for _, reading in steps])
    opened = episodes(db, world.patient_id)
    assert [(code, status) for _, code, status, _ in opened] == [("diastolic_bp", "open"), ("systolic_bp", "open")]
    dia, sys_ = opened[0][0], opened[1][0]

    # The pages reach the webhook receiver, signed; the in-app rows are delivered.
    add_webhook(db, world.organization_id, receiver.url + "/hook", secret)
    opened_at = steps[2][1].measured_at
    clock.now = opened_at + timedelta(seconds=5)
    dispatcher = make_dispatcher(organization_id=world.organization_id)
    assert await dispatcher.run_once() == 8  # 4 pages (2 episodes x 2 people) x (in-app + webhook)
    assert len(receiver.processed) == 4 and receiver.refused == []

    # Nobody acknowledges for 15 minutes: both episodes page the primary physician.
    clock.now = opened_at + timedelta(minutes=15)
    escalator = Escalator(
        pool, EscalationPolicy(after=timedelta(minutes=15)), DeliveryMetrics(), clock,
        organizations=frozenset({world.organization_id}),
    )  # fmt: skip
    assert {(s.level, s.role) for s in await escalator.run_once()} == {(1, "primary_physician")}
    assert [level for *_, level in episodes(db, world.patient_id)] == [1, 1]

    # The nurse acknowledges the systolic episode and resolves the diastolic one.
    nurse = db.execute("SELECT email FROM users WHERE id = %s", (world.users["nurse"],)).fetchone()
    assert nurse is not None
    assert alerts(["ack", str(sys_), "--as", nurse[0]]) == 0
    assert alerts(["resolve", str(dia), "--note", "cuff too small; manual 128/82", "--as", nurse[0]]) == 0
    capsys.readouterr()

    # The next diastolic breach opens a new episode (the resolved rule re-armed) and pages again.
    r4 = steps[3][1]
    later = dataclasses.replace(
        r4, reading_id=uuid4(), value=126, measured_at=r4.measured_at + timedelta(minutes=30),
        received_at=r4.received_at + timedelta(minutes=30),
    )  # fmt: skip
    insert(db, later)
    await processor.deliver([later])
    after = episodes(db, world.patient_id)
    assert [(code, status) for _, code, status, _ in after] == [
        ("diastolic_bp", "resolved"),
        ("systolic_bp", "acknowledged"),
        ("diastolic_bp", "open"),
    ]
    reopened = after[2][0]
    assert reopened not in (dia, sys_)
    pages = db.execute(
        "SELECT count(*) FROM notifications WHERE payload->>'alert_id' = %s AND priority = 'critical'", (str(reopened),)
    ).fetchone()
    assert pages == (2,)
