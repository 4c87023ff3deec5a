"""Escalation of unacknowledged critical episodes on the real database, with an injected clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import psycopg

from processors.delivery.escalation import EscalationPolicy
from processors.delivery.escalator import Escalator, escalation_key
from processors.delivery.metrics import DeliveryMetrics
from tests import factories
from tests.delivery.conftest import START, FakeClock, MakeDispatcher, add_alert

Conn = psycopg.Connection[Any]
Team = tuple[factories.Patient, dict[str, factories.Provider]]
POLICY = EscalationPolicy(after=timedelta(minutes=10))


def escalator(pool: asyncpg.Pool, org: factories.Organization, clock: FakeClock, metrics: DeliveryMetrics) -> Escalator:
    return Escalator(pool, POLICY, metrics, clock, organizations=frozenset({org.id}))


def pages(db: Conn, alert_id: Any) -> list[tuple[Any, str]]:
    rows = db.execute(
        "SELECT recipient_user_id, idempotency_key FROM notifications"
        " WHERE payload->>'alert_id' = %s AND payload ? 'escalation_level' ORDER BY created_at, idempotency_key",
        (str(alert_id),),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def episode(db: Conn, alert_id: Any) -> tuple[int, Any]:
    row = db.execute("SELECT escalation_level, escalated_at FROM vital_alerts WHERE id = %s", (alert_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


async def test_escalates_along_the_chain_on_the_injected_clock(
    db: Conn,
    org: factories.Organization,
    care_team: Team,
    pool: asyncpg.Pool,
    clock: FakeClock,
    metrics: DeliveryMetrics,
) -> None:
    patient, team = care_team
    alert = add_alert(db, patient, opened_at=START)
    e = escalator(pool, org, clock, metrics)

    clock.now = START + timedelta(minutes=9, seconds=59)
    assert await e.run_once() == []
    clock.now = START + timedelta(minutes=10)
    [first] = await e.run_once()
    assert (first.level, first.role) == (1, "primary_physician")
    physician = team["primary_physician"].user_id
    assert pages(db, alert) == [(physician, escalation_key(alert, 1, physician))]
    assert episode(db, alert) == (1, START + timedelta(minutes=10))

    # Replaying the pass changes nothing; the next step counts from the escalation.
    assert await e.run_once() == []
    clock.now = START + timedelta(minutes=19)
    assert await e.run_once() == []
    clock.now = START + timedelta(minutes=20)
    [second] = await e.run_once()
    assert (second.level, second.role) == (2, "care_manager")
    assert [p[0] for p in pages(db, alert)] == [physician, team["care_manager"].user_id]
    recorded = db.execute(
        "SELECT level, role::text, due_at, escalated_at FROM alert_escalations WHERE alert_id = %s ORDER BY level",
        (alert,),
    ).fetchall()
    assert recorded == [
        (1, "primary_physician", START + timedelta(minutes=10), START + timedelta(minutes=10)),
        (2, "care_manager", START + timedelta(minutes=20), START + timedelta(minutes=20)),
    ]
    # The chain is exhausted.
    clock.now = START + timedelta(hours=5)
    assert await e.run_once() == []
    assert metrics.escalations.labels("primary_physician")._value.get() == 1
    assert metrics.escalations.labels("care_manager")._value.get() == 1


async def test_acknowledged_warning_retrospective_and_resolved_episodes_never_escalate(
    db: Conn,
    org: factories.Organization,
    care_team: Team,
    pool: asyncpg.Pool,
    clock: FakeClock,
    metrics: DeliveryMetrics,
) -> None:
    patient, _ = care_team
    quiet = [
        add_alert(db, patient, status="acknowledged", vital_type="heart_rate"),
        add_alert(db, patient, severity="warning", vital_type="body_temperature"),
        add_alert(db, patient, retrospective=True, vital_type="blood_glucose"),
    ]
    clock.now = START + timedelta(hours=1)
    assert await escalator(pool, org, clock, metrics).run_once() == []
    assert all(pages(db, a) == [] for a in quiet)


async def test_organization_policy_overrides_the_default(
    db: Conn,
    org: factories.Organization,
    care_team: Team,
    pool: asyncpg.Pool,
    clock: FakeClock,
    metrics: DeliveryMetrics,
) -> None:
    patient, team = care_team
    db.execute(
        "INSERT INTO escalation_policies (organization_id, escalate_after, chain)"
        " VALUES (%s, interval '2 minutes', '{nurse,care_manager}')",
        (org.id,),
    )
    alert = add_alert(db, patient)
    clock.now = START + timedelta(minutes=2)
    [step] = await escalator(pool, org, clock, metrics).run_once()
    assert (step.level, step.role) == (1, "care_manager")
    assert [p[0] for p in pages(db, alert)] == [team["care_manager"].user_id]


async def test_escalation_pages_are_delivered_by_the_dispatcher(
    db: Conn,
    org: factories.Organization,
    care_team: Team,
    pool: asyncpg.Pool,
    clock: FakeClock,
    metrics: DeliveryMetrics,
    make_dispatcher: MakeDispatcher,
) -> None:
    patient, team = care_team
    alert = add_alert(db, patient)
    clock.now = START + timedelta(minutes=10)
    await escalator(pool, org, clock, metrics).run_once()
    assert await make_dispatcher().run_once() == 1
    row = db.execute(
        "SELECT n.status::text, n.priority::text, d.status::text FROM notifications n"
        " JOIN notification_deliveries d ON d.notification_id = n.id WHERE n.payload->>'alert_id' = %s",
        (str(alert),),
    ).fetchone()
    assert row == ("sent", "critical", "sent")
    assert team["primary_physician"].user_id in [p[0] for p in pages(db, alert)]
