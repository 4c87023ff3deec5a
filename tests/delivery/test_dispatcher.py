"""The dispatcher against the real database, a real HTTP receiver, a real SMTP server and a local push gateway."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
import pytest

from processors.delivery.dispatcher import DispatchConfig
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.notification import Channel
from processors.delivery.rate_limit import Rate
from processors.delivery.retry import RetryPolicy
from processors.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify
from processors.delivery.store import DeliveryStore
from processors.delivery.webhook import WebhookSender
from tests import factories
from tests.delivery.conftest import (
    LOOPBACK_ALLOWED,
    START,
    FakeClock,
    MakeDispatcher,
    add_notification,
    add_webhook,
    set_preferences,
)
from tests.delivery.receivers import HttpReceiver, Inbox

Conn = psycopg.Connection[Any]
Team = tuple[factories.Patient, dict[str, factories.Provider]]
PHI = ("86.4", "spo2", "Opened", "limit", "value")


def deliveries(db: Conn, notification_id: UUID) -> dict[str, tuple[str, int]]:
    rows = db.execute(
        "SELECT channel::text, status::text, attempts FROM notification_deliveries WHERE notification_id = %s",
        (notification_id,),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def attempts(db: Conn, notification_id: UUID, channel: str) -> list[tuple[int, str, int | None]]:
    return [
        (r[0], r[1], r[2])
        for r in db.execute(
            "SELECT a.attempt, a.outcome::text, a.response_code FROM delivery_attempts a"
            " JOIN notification_deliveries d ON d.id = a.delivery_id"
            " WHERE d.notification_id = %s AND d.channel = %s ORDER BY a.attempt",
            (notification_id, channel),
        ).fetchall()
    ]


def notification_status(db: Conn, notification_id: UUID) -> tuple[str, str | None]:
    row = db.execute(
        "SELECT status::text, failure_reason FROM notifications WHERE id = %s", (notification_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1]


async def test_webhook_is_signed_verifiable_and_carries_the_idempotency_key(
    db: Conn, care_team: Team, receiver: HttpReceiver, secret: str, make_dispatcher: MakeDispatcher, clock: FakeClock
) -> None:
    patient, team = care_team
    add_webhook(db, patient.organization_id, receiver.url + "/hook", secret)
    nid, key = add_notification(db, patient, team["nurse"].user_id)

    assert await make_dispatcher().run_once() == 2  # in-app + webhook

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert verify(secret.encode(), request.body, request.headers[SIGNATURE_HEADER], clock())
    assert request.headers[IDEMPOTENCY_HEADER] == key
    assert receiver.processed == [key] and receiver.refused == []
    document = json.loads(request.body)
    assert document["id"] == str(nid) and document["priority"] == "critical"
    assert not any(word in request.body.decode() for word in PHI)
    assert deliveries(db, nid) == {"in_app": ("sent", 1), "webhook": ("sent", 1)}
    assert attempts(db, nid, "webhook") == [(1, "sent", 200)]
    assert notification_status(db, nid) == ("sent", None)


async def test_a_receiver_refuses_a_wrong_secret_and_a_replay(
    db: Conn, care_team: Team, receiver: HttpReceiver, make_dispatcher: MakeDispatcher, clock: FakeClock
) -> None:
    patient, team = care_team
    add_webhook(db, patient.organization_id, receiver.url + "/hook", "x" * 40)  # not the receiver's secret
    nid, _ = add_notification(db, patient, team["nurse"].user_id)
    await make_dispatcher().run_once()
    assert receiver.refused == ["signature mismatch"]
    # 401 is a refusal for good: the webhook delivery is dead at once, the in-app one went through.
    assert deliveries(db, nid) == {"in_app": ("sent", 1), "webhook": ("dead", 1)}
    assert notification_status(db, nid) == ("sent", "webhook: http_401")

    # Replaying the captured request 10 minutes later fails the receiver's replay window.
    captured = receiver.requests[0]
    clock.advance(timedelta(minutes=10))
    with pytest.raises(Exception, match="replay window"):
        verify(b"x" * 40, captured.body, captured.headers[SIGNATURE_HEADER], clock())


async def test_retries_with_backoff_then_delivers_with_the_same_key_and_body(
    db: Conn, care_team: Team, receiver: HttpReceiver, secret: str, make_dispatcher: MakeDispatcher, clock: FakeClock
) -> None:
    patient, team = care_team
    add_webhook(db, patient.organization_id, receiver.url + "/hook", secret)
    nid, key = add_notification(db, patient, team["nurse"].user_id)
    receiver.statuses = [500, 503]
    dispatcher = make_dispatcher(retry=RetryPolicy(base=timedelta(seconds=10), cap=timedelta(minutes=5)))

    await dispatcher.run_once()
    row = db.execute(
        "SELECT next_attempt_at FROM notification_deliveries WHERE notification_id = %s AND channel = 'webhook'",
        (nid,),
    ).fetchone()
    assert row is not None and START + timedelta(seconds=5) <= row[0] <= START + timedelta(seconds=10)
    assert await dispatcher.run_once() == 0  # not due yet
    clock.advance(timedelta(seconds=10))
    assert await dispatcher.run_once() == 1
    clock.advance(timedelta(seconds=20))
    assert await dispatcher.run_once() == 1

    assert attempts(db, nid, "webhook") == [(1, "retry", 500), (2, "retry", 503), (3, "sent", 200)]
    assert [r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests] == [key] * 3
    assert len({r.body for r in receiver.requests}) == 1
    assert [r.headers["X-RPM-Delivery-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    assert notification_status(db, nid) == ("sent", None)


async def test_dead_after_max_attempts(
    db: Conn,
    care_team: Team,
    receiver: HttpReceiver,
    secret: str,
    make_dispatcher: MakeDispatcher,
    clock: FakeClock,
    metrics: DeliveryMetrics,
) -> None:
    patient, team = care_team
    add_webhook(db, patient.organization_id, receiver.url + "/hook", secret)
    nid, _ = add_notification(db, patient, team["nurse"].user_id)
    receiver.statuses = [503] * 10
    dispatcher = make_dispatcher(retry=RetryPolicy(base=timedelta(seconds=1), cap=timedelta(seconds=4), max_attempts=3))
    for _ in range(5):
        await dispatcher.run_once()
        clock.advance(timedelta(seconds=5))
    assert [a[1] for a in attempts(db, nid, "webhook")] == ["retry", "retry", "dead"]
    assert len(receiver.requests) == 3
    assert deliveries(db, nid)["webhook"] == ("dead", 3)
    assert metrics.attempts.labels("webhook", "dead")._value.get() == 1
    assert metrics.failures.labels("webhook", "http_503")._value.get() == 3


async def test_redelivery_after_a_lost_lease_reuses_the_key_and_the_receiver_deduplicates(
    db: Conn,
    care_team: Team,
    pool: Any,
    receiver: HttpReceiver,
    secret: str,
    make_dispatcher: MakeDispatcher,
    clock: FakeClock,
    hooks: Any,
    metrics: DeliveryMetrics,
) -> None:
    patient, team = care_team
    add_webhook(db, patient.organization_id, receiver.url + "/hook", secret)
    nid, key = add_notification(db, patient, team["nurse"].user_id, priority="high")
    store = DeliveryStore(pool, frozenset({patient.organization_id}))
    # A dispatcher plans, claims and sends, then dies before recording the outcome.
    await store.plan_pending(clock(), 10)
    jobs = await store.claim_due(clock(), 10, timedelta(seconds=30))
    crashed = next(j for j in jobs if j.channel is Channel.WEBHOOK)
    await WebhookSender(hooks, clock, policy=LOOPBACK_ALLOWED).send(crashed)
    # Within the lease nobody takes it over; after it, another dispatcher delivers again.
    dispatcher = make_dispatcher()
    assert await dispatcher.run_once() == 0
    clock.advance(timedelta(seconds=31))
    assert await dispatcher.run_once() == 2

    assert [r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests] == [key, key]
    assert receiver.processed == [key]  # processed once
    assert deliveries(db, nid)["webhook"] == ("sent", 2)
    # The first claim comes back late: its outcome is not applied.
    from processors.delivery.notification import DeliveryStatus
    from processors.delivery.store import Outcome

    assert not await store.record(crashed, Outcome(DeliveryStatus.SENT, START, 5, response_code=200))
    assert deliveries(db, nid)["webhook"] == ("sent", 2)


async def test_replaying_planning_never_duplicates_deliveries(
    db: Conn, care_team: Team, pool: Any, clock: FakeClock
) -> None:
    patient, team = care_team
    nid, _ = add_notification(db, patient, team["nurse"].user_id)
    store = DeliveryStore(pool, frozenset({patient.organization_id}))
    await store.plan_pending(clock(), 10)
    db.execute("UPDATE notifications SET status = 'pending' WHERE id = %s", (nid,))  # as if the commit was replayed
    await store.plan_pending(clock(), 10)
    count = db.execute("SELECT count(*) FROM notification_deliveries WHERE notification_id = %s", (nid,)).fetchone()
    assert count == (1,)


async def test_email_over_real_smtp_without_phi(
    db: Conn, care_team: Team, inbox: Inbox, make_dispatcher: MakeDispatcher
) -> None:
    patient, team = care_team
    nurse = team["nurse"]
    set_preferences(db, patient.organization_id, nurse.user_id, ["in_app", "email"])
    nid, key = add_notification(db, patient, nurse.user_id)
    await make_dispatcher().run_once()
    address = db.execute("SELECT email FROM users WHERE id = %s", (nurse.user_id,)).fetchone()
    assert address is not None
    assert [m.rcpt_tos for m in inbox.messages] == [[address[0]]]
    message = inbox.parsed()[0]
    assert message["X-RPM-Idempotency-Key"] == key
    assert message["Subject"] == "[RPM] CRITICAL vital sign alert"
    text = message.get_content()
    assert f"/notifications/{nid}" in text
    assert not any(word in text for word in PHI)
    assert deliveries(db, nid) == {"in_app": ("sent", 1), "email": ("sent", 1)}


async def test_smtp_temporary_failure_is_retried_permanent_is_dead(
    db: Conn, care_team: Team, inbox: Inbox, make_dispatcher: MakeDispatcher, clock: FakeClock
) -> None:
    patient, team = care_team
    nurse = team["nurse"]
    set_preferences(db, patient.organization_id, nurse.user_id, ["email"])
    first, _ = add_notification(db, patient, nurse.user_id)
    inbox.replies = ["451 4.3.0 try again later"]
    dispatcher = make_dispatcher()
    await dispatcher.run_once()
    assert attempts(db, first, "email") == [(1, "retry", 451)]
    clock.advance(timedelta(seconds=10))
    await dispatcher.run_once()
    assert attempts(db, first, "email") == [(1, "retry", 451), (2, "sent", 250)]

    second, _ = add_notification(db, patient, nurse.user_id)
    inbox.replies = ["554 5.7.1 rejected"]
    await dispatcher.run_once()
    assert attempts(db, second, "email") == [(1, "dead", 554)]


async def test_push_through_the_gateway_and_unregistered_tokens_are_retired(
    db: Conn, care_team: Team, receiver: HttpReceiver, make_dispatcher: MakeDispatcher
) -> None:
    patient, team = care_team
    nurse = team["nurse"]
    set_preferences(db, patient.organization_id, nurse.user_id, ["push"])
    devices = []
    for platform in ("ios", "android"):
        row = db.execute(
            "INSERT INTO user_devices (organization_id, user_id, platform, push_token) VALUES (%s, %s, %s, %s)"
            " RETURNING id",
            (patient.organization_id, nurse.user_id, platform, factories.unique("token-" + platform)),
        ).fetchone()
        assert row is not None
        devices.append(row[0])
    nid, key = add_notification(db, patient, nurse.user_id)
    receiver.statuses = [200, 410]  # the second device's token is no longer valid
    await make_dispatcher().run_once()

    pushes = [json.loads(r.body) for r in receiver.requests if r.path == "/v1/push"]
    assert sorted(p["platform"] for p in pushes) == ["android", "ios"]
    assert all(p["title"] == "CRITICAL vital sign alert" and p["data"]["notification_id"] == str(nid) for p in pushes)
    assert all(r.headers[IDEMPOTENCY_HEADER].startswith(key + ":") for r in receiver.requests)
    states = db.execute(
        "SELECT d.status::text, u.is_active FROM notification_deliveries d JOIN user_devices u ON u.id = d.target_id"
        " WHERE d.notification_id = %s ORDER BY d.status",
        (nid,),
    ).fetchall()
    assert sorted(states) == [("dead", False), ("sent", True)]


async def test_quiet_hours_delay_non_critical_email_but_never_critical(
    db: Conn, care_team: Team, inbox: Inbox, make_dispatcher: MakeDispatcher, clock: FakeClock
) -> None:
    patient, team = care_team
    nurse = team["nurse"]
    chicago = ZoneInfo("America/Chicago")
    clock.now = datetime(2026, 1, 11, 3, 0, tzinfo=chicago).astimezone(UTC)
    set_preferences(db, patient.organization_id, nurse.user_id, ["email"], ("22:00", "07:00"), "America/Chicago")
    critical, _ = add_notification(db, patient, nurse.user_id, priority="critical", scheduled_for=clock.now)
    high, _ = add_notification(db, patient, nurse.user_id, priority="high", scheduled_for=clock.now)
    dispatcher = make_dispatcher()

    await dispatcher.run_once()
    assert deliveries(db, critical) == {"in_app": ("sent", 1), "email": ("sent", 1)}
    assert deliveries(db, high) == {"in_app": ("sent", 1), "email": ("pending", 0)}
    row = db.execute(
        "SELECT next_attempt_at FROM notification_deliveries WHERE notification_id = %s AND channel = 'email'", (high,)
    ).fetchone()
    assert row is not None and row[0].astimezone(chicago).time() == time(7, 0)
    assert len(inbox.messages) == 1

    clock.now = datetime(2026, 1, 11, 7, 0, tzinfo=chicago).astimezone(UTC)
    await dispatcher.run_once()
    assert deliveries(db, high)["email"] == ("sent", 1)
    assert len(inbox.messages) == 2


async def test_rate_limit_spaces_a_channel_without_slowing_the_others(
    db: Conn, care_team: Team, inbox: Inbox, make_dispatcher: MakeDispatcher, clock: FakeClock
) -> None:
    patient, team = care_team
    nurse = team["nurse"]
    set_preferences(db, patient.organization_id, nurse.user_id, ["email"])
    for _ in range(4):
        add_notification(db, patient, nurse.user_id, priority="normal")
    dispatcher = make_dispatcher(
        rates={Channel.EMAIL: Rate(per_second=2, burst=1)}, config=DispatchConfig(batch_size=50, concurrency=1)
    )
    t0 = clock.mono
    assert await dispatcher.run_once() == 8
    assert len(inbox.messages) == 4
    # One immediately, three more at 2 per second: 1.5 s of waiting, none of it for in-app.
    assert clock.mono - t0 == pytest.approx(1.5)


async def test_concurrent_dispatchers_deliver_each_notification_once(
    db: Conn, care_team: Team, receiver: HttpReceiver, secret: str, make_dispatcher: MakeDispatcher
) -> None:
    patient, team = care_team
    add_webhook(db, patient.organization_id, receiver.url + "/hook", secret)
    keys = {add_notification(db, patient, team["nurse"].user_id)[1] for _ in range(30)}
    config = DispatchConfig(batch_size=7, concurrency=4)
    dispatchers = [make_dispatcher(config=config) for _ in range(3)]
    for _ in range(10):
        await asyncio.gather(*(d.run_once() for d in dispatchers))
    assert sorted(r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests) == sorted(keys)
    count = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE a.attempt = 1) FROM delivery_attempts a"
        " JOIN notification_deliveries d ON d.id = a.delivery_id WHERE d.organization_id = %s",
        (patient.organization_id,),
    ).fetchone()
    assert count == (60, 60)
    # Each notification's two deliveries finish concurrently; the roll-up still sees both.
    statuses = db.execute(
        "SELECT status::text, count(*) FROM notifications WHERE organization_id = %s GROUP BY 1",
        (patient.organization_id,),
    ).fetchall()
    assert statuses == [("sent", 30)]
