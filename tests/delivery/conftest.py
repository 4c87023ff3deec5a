from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import psycopg
import pytest
from psycopg.types.json import Jsonb

from processors.delivery.__main__ import main
from processors.delivery.dispatcher import DispatchConfig, Dispatcher
from processors.delivery.in_app import InAppSender
from processors.delivery.mail import EmailSender
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.notification import Channel
from processors.delivery.push import PushSender
from processors.delivery.rate_limit import Rate, RateLimits
from processors.delivery.retry import RetryPolicy
from processors.delivery.sender import Sender
from processors.delivery.ssrf import EgressPolicy, guarded_session
from processors.delivery.store import DeliveryStore
from processors.delivery.webhook import WebhookSender
from tests import factories
from tests.delivery.receivers import HttpReceiver, Inbox
from tests.roles import RoleSettings

Conn = psycopg.Connection[Any]
START = datetime(2026, 1, 11, 15, 0, tzinfo=UTC)
RETRY = RetryPolicy(base=timedelta(seconds=10), cap=timedelta(minutes=5), max_attempts=4)
CONFIG = DispatchConfig(batch_size=50, lease=timedelta(seconds=30))


class FakeClock:
    """Wall and monotonic time that only move when a test says so."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now
        self.mono = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, delta: timedelta) -> None:
        self.now += delta
        self.mono += delta.total_seconds()

    async def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=seconds))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    """A pool as the processors' role, the role the dispatcher runs as."""
    p = await asyncpg.create_pool(RoleSettings().url("processor"), min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
def secret() -> str:
    return secrets.token_hex(24)


@pytest.fixture
async def receiver(clock: FakeClock, secret: str) -> AsyncIterator[HttpReceiver]:
    r = HttpReceiver(secret.encode(), clock)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    i = Inbox()
    await i.start()
    try:
        yield i
    finally:
        await i.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# The receivers listen on loopback: tests allow private addresses explicitly (the default refuses them).
LOOPBACK_ALLOWED = EgressPolicy(allow_private=True)


@pytest.fixture
async def hooks() -> AsyncIterator[aiohttp.ClientSession]:
    """The webhook session, behind the SSRF guard (allowing loopback, as LOOPBACK_ALLOWED)."""
    async with guarded_session(LOOPBACK_ALLOWED) as session:
        yield session


MakeDispatcher = Callable[..., Dispatcher]


@pytest.fixture
def metrics() -> DeliveryMetrics:
    return DeliveryMetrics()


@pytest.fixture
def make_dispatcher(
    pool: asyncpg.Pool,
    org: factories.Organization,
    clock: FakeClock,
    receiver: HttpReceiver,
    inbox: Inbox,
    http: aiohttp.ClientSession,
    hooks: aiohttp.ClientSession,
    metrics: DeliveryMetrics,
) -> MakeDispatcher:
    """Dispatchers over this test's organization only, with real webhook, SMTP and push receivers."""

    def make(
        *,
        retry: RetryPolicy = RETRY,
        rates: dict[Channel, Rate] | None = None,
        config: DispatchConfig = CONFIG,
        organization_id: UUID | None = None,
        webhook_policy: EgressPolicy = LOOPBACK_ALLOWED,
    ) -> Dispatcher:
        senders: dict[Channel, Sender] = {
            Channel.IN_APP: InAppSender(),
            Channel.WEBHOOK: WebhookSender(hooks, clock, timeout_s=5, policy=webhook_policy),
            Channel.EMAIL: EmailSender(
                "127.0.0.1", inbox.port, "alerts@rpm.example.test", "https://rpm.example.test", timeout_s=5
            ),
            Channel.PUSH: PushSender(http, receiver.url, timeout_s=5),
        }
        return Dispatcher(
            DeliveryStore(pool, frozenset({organization_id or org.id})),
            senders,
            retry=retry,
            limits=RateLimits(rates or {}, clock.monotonic),
            metrics=metrics,
            clock=clock,
            monotonic=clock.monotonic,
            config=config,
            rng=random.Random(42),
            sleep=clock.sleep,
        )

    return make


def add_webhook(db: Conn, org_id: UUID, url: str, secret: str, **columns: Any) -> UUID:
    names = ["organization_id", "name", "url", "secret", *columns]
    values = [org_id, "pager", url, secret, *columns.values()]
    row = db.execute(
        f"INSERT INTO webhook_endpoints ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(values))}) RETURNING id",
        values,
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))


def set_preferences(
    db: Conn,
    org_id: UUID,
    user_id: UUID,
    channels: list[str],
    quiet: tuple[str, str] | None = None,
    tz: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO recipient_preferences (user_id, organization_id, channels, quiet_start, quiet_end, timezone)"
        " VALUES (%s, %s, %s::notification_channel[], %s, %s, %s)",
        (user_id, org_id, channels, quiet[0] if quiet else None, quiet[1] if quiet else None, tz),
    )


def add_notification(
    db: Conn,
    patient: factories.Patient,
    recipient: UUID,
    *,
    priority: str = "critical",
    type_: str = "vital_alert",
    scheduled_for: datetime = START,
    payload: dict[str, Any] | None = None,
) -> tuple[UUID, str]:
    """A notification as the processors write it (in-app, with an idempotency key); returns (id, key)."""
    key = f"{type_}:{factories.unique('test')}:{recipient}"
    row = db.execute(
        "INSERT INTO notifications (organization_id, recipient_user_id, patient_id, type, priority, title, body,"
        " payload, idempotency_key, scheduled_for) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            patient.organization_id,
            recipient,
            patient.id,
            type_,
            priority,
            "Critical: spo2 low",
            "Opened: 86.4 % (limit 88 %), rule threshold.",
            Jsonb(payload or {"value": 86.4, "unit": "%", "severity": "critical"}),
            key,
            scheduled_for,
        ),
    ).fetchone()
    assert row is not None
    return UUID(str(row[0])), key


@pytest.fixture
def care_team(
    db: Conn, org: factories.Organization
) -> Iterator[tuple[factories.Patient, dict[str, factories.Provider]]]:
    """A patient with a nurse, a primary physician and a care manager."""
    patient = factories.create_patient(db, org.id)
    factories.create_care_plan(db, patient)
    team = {
        "nurse": factories.create_provider(db, org.id, provider_type="nurse"),
        "primary_physician": factories.create_provider(db, org.id, provider_type="physician"),
        "care_manager": factories.create_provider(db, org.id, provider_type="care_manager"),
    }
    for role, provider in team.items():
        factories.add_to_care_team(db, patient, provider, role=role, is_primary=role == "primary_physician")
    yield patient, team


def email(db: Conn, user_id: UUID) -> str:
    """The user's login email (what `--as` names)."""
    row = db.execute("SELECT email FROM users WHERE id = %s", (user_id,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def admin(db: Conn, org: factories.Organization) -> tuple[UUID, str]:
    """An admin of the test's organization: (user id, email)."""
    user_id = factories.create_user(db, org.id, role="admin")
    return user_id, email(db, user_id)


@pytest.fixture
def allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receivers listen on loopback: allow it, as a local deployment would."""
    monkeypatch.setenv("DELIVERY_WEBHOOK_ALLOW_PRIVATE", "true")


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`python -m processors.delivery endpoints *argv`: (exit code, stdout, stderr)."""
    # The CLI runs its own event loop (asyncio.run) for the DNS check: give it a thread, as a shell would a process.
    code = await asyncio.to_thread(main, ["endpoints", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def add_endpoint(capsys: pytest.CaptureFixture[str], url: str, actor: str, *extra: str) -> dict[str, Any]:
    """`endpoints add URL --name pager --json` as `actor`: the printed endpoint, with its secret."""
    code, out, err = await cli(capsys, "add", url, "--name", "pager", "--as", actor, "--json", *extra)
    assert code == 0, err
    added: dict[str, Any] = json.loads(out)
    return added


def audit(db: Conn, endpoint_id: UUID) -> list[tuple[str, UUID, Any, Any]]:
    """The endpoint's audit rows, oldest first: (action, actor, after, details)."""
    rows = db.execute(
        "SELECT action, actor_user_id, after, details FROM audit_logs"
        " WHERE entity_type = 'webhook_endpoints' AND entity_id = %s ORDER BY occurred_at",
        (endpoint_id,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def add_alert(
    db: Conn,
    patient: factories.Patient,
    *,
    opened_at: datetime = START,
    severity: str = "critical",
    status: str = "open",
    retrospective: bool = False,
    vital_type: str = "spo2",
    direction: str = "low",
) -> UUID:
    """A vital_alerts episode as the processors write it (status open: nobody acknowledged it yet)."""
    requirement = factories.create_requirement(db, patient, vital_type, warning_low=92, critical_low=88)
    row = db.execute(
        "INSERT INTO vital_alerts (id, organization_id, patient_id, vital_type_id, direction, severity, status, rule,"
        " requirement_id, requirement_version, retrospective, opened_at, updated_at, last_change,"
        " trigger_reading_ids, value, threshold, revision, acknowledged_at)"
        " SELECT uuid_generate_v7(), %s, %s, %s, %s, %s, %s, 'threshold', %s, version, %s, %s, %s, 'opened',"
        " ARRAY[uuid_generate_v7()], 86.4, 88, 1, CASE WHEN %s = 'acknowledged' THEN %s::timestamptz END"
        " FROM vital_requirements WHERE id = %s RETURNING id",
        (
            patient.organization_id,
            patient.id,
            factories.vital_type_id(db, vital_type),
            direction,
            severity,
            status,
            requirement,
            retrospective,
            opened_at,
            opened_at,
            status,
            opened_at,
            requirement,
        ),
    ).fetchone()
    assert row is not None
    return UUID(str(row[0]))
