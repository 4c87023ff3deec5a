"""The dispatcher's SQL (asyncpg): plan pending notifications, claim due deliveries, record outcomes.

Claims use FOR UPDATE SKIP LOCKED, so any number of dispatchers share the work without blocking each other; a
claimed delivery carries a lease, and one whose dispatcher died is claimed again when the lease expires (hence
at least once: receivers deduplicate on the idempotency key). An outcome is recorded only by the claim that
still owns the delivery (same attempt number, still sending).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from uuid import UUID

import asyncpg

from processors.delivery.notification import Channel, DeliveryStatus, Notification, Priority
from processors.delivery.plan import Endpoint, PlannedDelivery, Preferences, plan_deliveries
from processors.delivery.quiet_hours import QuietHours
from processors.delivery.sender import EmailTarget, InAppTarget, Job, PushTarget, Target, WebhookTarget

__all__ = ["TRANSIENT_ERRORS", "Backlog", "DeliveryStore", "Outcome"]

# Failures a loop survives by trying again later (connection lost, serialization/deadlock); anything else is a bug.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TransactionRollbackError,
    asyncpg.CannotConnectNowError,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended: `status` is the delivery's new state (pending again means a retry at `retry_at`)."""

    status: DeliveryStatus
    started_at: datetime
    duration_ms: int
    error: str | None = None
    response_code: int | None = None
    retry_at: datetime | None = None
    deactivate_device: bool = False


@dataclass(frozen=True, slots=True)
class Backlog:
    """The outbox at a glance: notifications not yet planned, deliveries waiting or in flight, the oldest due."""

    notifications_pending: int
    deliveries_pending: int
    deliveries_sending: int
    deliveries_due: int
    oldest_due_seconds: float


def _notification(row: asyncpg.Record) -> Notification:
    payload = row["payload"]
    return Notification(
        id=row["n_id"],
        organization_id=row["organization_id"],
        recipient_user_id=row["recipient_user_id"],
        patient_id=row["patient_id"],
        type=row["type"],
        priority=Priority(row["priority"]),
        channel=Channel(row["n_channel"]),
        title=row["title"],
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        payload=json.loads(payload) if isinstance(payload, str) else dict(payload),
    )


_NOTIFICATION_COLUMNS = """
    n.id AS n_id, n.organization_id, n.recipient_user_id, n.patient_id, n.type::text AS type,
    n.priority::text AS priority, n.channel::text AS n_channel, n.title, n.idempotency_key, n.created_at, n.payload
"""


class DeliveryStore:
    """`organizations` restricts every claim to those tenants (a shard of the work); empty means all of them."""

    def __init__(self, pool: asyncpg.Pool, organizations: frozenset[UUID] = frozenset()) -> None:
        self._pool = pool
        self._orgs: list[UUID] | None = sorted(organizations, key=str) or None

    async def plan_pending(self, now: datetime, limit: int) -> list[tuple[Notification, list[PlannedDelivery]]]:
        """Claims up to `limit` pending notifications due by `now` and inserts their deliveries (idempotent)."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""
                SELECT {_NOTIFICATION_COLUMNS}
                  FROM notifications n
                 WHERE n.status = 'pending' AND n.scheduled_for <= $1
                   AND ($3::uuid[] IS NULL OR n.organization_id = ANY($3::uuid[]))
                 ORDER BY n.priority DESC, n.scheduled_for
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED
                """,
                now,
                limit,
                self._orgs,
            )
            if not rows:
                return []
            notifications = [_notification(r) for r in rows]
            users = list({n.recipient_user_id for n in notifications})
            orgs = list({n.organization_id for n in notifications})
            preferences = await self._preferences(conn, users)
            endpoints = await self._endpoints(conn, orgs)
            devices = await self._devices(conn, users)
            planned = [
                (
                    n,
                    plan_deliveries(
                        n,
                        preferences.get(n.recipient_user_id),
                        endpoints.get(n.organization_id, ()),
                        devices.get(n.recipient_user_id, ()),
                        now,
                    ),
                )
                for n in notifications
            ]
            records = [
                (n.id, n.organization_id, p.channel.value, p.target_id, n.priority.value, p.not_before)
                for n, plan in planned
                for p in plan
            ]
            await conn.executemany(
                """
                INSERT INTO notification_deliveries
                       (notification_id, organization_id, channel, target_id, priority, next_attempt_at)
                VALUES ($1, $2, $3::notification_channel, $4, $5::notification_priority, $6)
                ON CONFLICT (notification_id, channel, target_id) DO NOTHING
                """,
                records,
            )
            await conn.execute(
                "UPDATE notifications SET status = 'sending' WHERE id = ANY($1::uuid[])", [n.id for n in notifications]
            )
            return planned

    @staticmethod
    async def _preferences(conn: asyncpg.Connection, users: Sequence[UUID]) -> dict[UUID, Preferences]:
        rows = await conn.fetch(
            """
            SELECT p.user_id, p.channels::text[] AS channels, p.quiet_start, p.quiet_end,
                   coalesce(p.timezone, o.timezone)::text AS timezone
              FROM recipient_preferences p JOIN organizations o ON o.id = p.organization_id
             WHERE p.user_id = ANY($1::uuid[])
            """,
            users,
        )
        found: dict[UUID, Preferences] = {}
        for r in rows:
            start: time | None = r["quiet_start"]
            end: time | None = r["quiet_end"]
            quiet = None if start is None or end is None else QuietHours(start, end, r["timezone"])
            found[r["user_id"]] = Preferences(frozenset(Channel(c) for c in r["channels"]), quiet)
        return found

    @staticmethod
    async def _endpoints(conn: asyncpg.Connection, orgs: Sequence[UUID]) -> dict[UUID, list[Endpoint]]:
        rows = await conn.fetch(
            """
            SELECT id, organization_id, notification_types::text[] AS types, min_priority::text AS min_priority
              FROM webhook_endpoints WHERE is_active AND organization_id = ANY($1::uuid[])
            """,
            orgs,
        )
        found: dict[UUID, list[Endpoint]] = defaultdict(list)
        for r in rows:
            found[r["organization_id"]].append(Endpoint(r["id"], frozenset(r["types"]), Priority(r["min_priority"])))
        return found

    @staticmethod
    async def _devices(conn: asyncpg.Connection, users: Sequence[UUID]) -> dict[UUID, list[UUID]]:
        rows = await conn.fetch(
            "SELECT id, user_id FROM user_devices WHERE is_active AND user_id = ANY($1::uuid[]) ORDER BY id", users
        )
        found: dict[UUID, list[UUID]] = defaultdict(list)
        for r in rows:
            found[r["user_id"]].append(r["id"])
        return found

    async def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[Job]:
        """Claims up to `limit` deliveries due by `now` (or whose lease expired), most urgent first."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""
                WITH due AS (
                    SELECT id FROM notification_deliveries
                     WHERE ((status = 'pending' AND next_attempt_at <= $1)
                            OR (status = 'sending' AND lease_expires_at <= $1))
                       AND ($4::uuid[] IS NULL OR organization_id = ANY($4::uuid[]))
                     ORDER BY priority DESC, next_attempt_at
                     LIMIT $2
                       FOR UPDATE SKIP LOCKED
                ), claimed AS (
                    UPDATE notification_deliveries d
                       SET status = 'sending', attempts = d.attempts + 1, lease_expires_at = $1 + $3::interval
                      FROM due WHERE d.id = due.id
                    RETURNING d.id, d.notification_id, d.channel, d.target_id, d.attempts, d.lease_expires_at
                )
                SELECT c.id AS d_id, c.channel::text AS channel, c.target_id, c.attempts, c.lease_expires_at,
                       {_NOTIFICATION_COLUMNS},
                       u.email,
                       ud.platform::text AS platform, ud.push_token, ud.is_active AS device_active,
                       w.url, w.secret, w.is_active AS endpoint_active,
                       CASE WHEN w.previous_secret_expires_at > $1 THEN w.previous_secret END AS previous_secret
                  FROM claimed c
                  JOIN notifications n ON n.id = c.notification_id
                  LEFT JOIN users u ON c.channel = 'email' AND u.id = c.target_id AND u.is_active
                       AND u.deleted_at IS NULL
                  LEFT JOIN user_devices ud ON c.channel = 'push' AND ud.id = c.target_id
                  LEFT JOIN webhook_endpoints w ON c.channel = 'webhook' AND w.id = c.target_id
                 ORDER BY n.priority DESC, n.created_at
                """,
                now,
                limit,
                lease,
                self._orgs,
            )
        return [self._job(r) for r in rows]

    @staticmethod
    def _job(r: asyncpg.Record) -> Job:
        channel = Channel(r["channel"])
        target: Target | None = None
        if channel is Channel.IN_APP:
            target = InAppTarget(r["target_id"])
        elif channel is Channel.EMAIL and r["email"] is not None:
            target = EmailTarget(r["email"])
        elif channel is Channel.PUSH and r["device_active"]:
            target = PushTarget(r["target_id"], r["platform"], r["push_token"])
        elif channel is Channel.WEBHOOK and r["endpoint_active"]:
            secrets = [r["secret"]] + ([r["previous_secret"]] if r["previous_secret"] else [])
            target = WebhookTarget(r["target_id"], r["url"], tuple(s.encode() for s in secrets))
        return Job(
            delivery_id=r["d_id"],
            attempt=r["attempts"],
            channel=channel,
            target_id=r["target_id"],
            target=target,
            notification=_notification(r),
            lease_expires_at=r["lease_expires_at"],
        )

    async def record(self, job: Job, outcome: Outcome) -> bool:
        """Stores the attempt and the delivery's new state, and rolls the notification's status up.

        Returns False (and changes nothing but the attempt log) when this claim no longer owns the delivery.
        """
        attempt_outcome = {
            DeliveryStatus.SENT: "sent",
            DeliveryStatus.PENDING: "retry",
            DeliveryStatus.DEAD: "dead",
        }[outcome.status]
        finished = outcome.started_at + timedelta(milliseconds=outcome.duration_ms)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO delivery_attempts (delivery_id, organization_id, attempt, started_at, duration_ms,
                                               outcome, error, response_code)
                VALUES ($1, $2, $3, $4, $5, $6::delivery_outcome, $7, $8)
                ON CONFLICT (delivery_id, attempt) DO NOTHING
                """,
                job.delivery_id,
                job.notification.organization_id,
                job.attempt,
                outcome.started_at,
                outcome.duration_ms,
                attempt_outcome,
                outcome.error,
                outcome.response_code,
            )
            owned = await conn.fetchval(
                """
                UPDATE notification_deliveries
                   SET status = $3::delivery_status, lease_expires_at = NULL, last_error = $4,
                       next_attempt_at = coalesce($5, next_attempt_at),
                       sent_at = CASE WHEN $3::delivery_status = 'sent' THEN $6::timestamptz END,
                       dead_at = CASE WHEN $3::delivery_status = 'dead' THEN $6::timestamptz END
                 WHERE id = $1 AND attempts = $2 AND status = 'sending'
                RETURNING true
                """,
                job.delivery_id,
                job.attempt,
                outcome.status.value,
                outcome.error,
                outcome.retry_at,
                finished,
            )
            if not owned:
                return False
            if outcome.deactivate_device and job.channel is Channel.PUSH:
                await conn.execute(
                    """
                    UPDATE user_devices SET is_active = false, deactivated_at = $2,
                           deactivation_reason = 'push gateway: token unregistered'
                     WHERE id = $1 AND is_active
                    """,
                    job.target_id,
                    finished,
                )
            await self._roll_up(conn, job.notification.id)
            return True

    @staticmethod
    async def _roll_up(conn: asyncpg.Connection, notification_id: UUID) -> None:
        # sent_at: first successful delivery. Final status once no delivery is open: sent if any got through
        # (failure_reason names the channels that died), dead if none did.
        # Two deliveries of one notification may finish at once: each would see the other still 'sending' in
        # its snapshot and neither would finish the notification. Locking the notification first serializes
        # them; the aggregate below is a new statement, so it sees what the other transaction committed.
        await conn.execute("SELECT 1 FROM notifications WHERE id = $1 FOR UPDATE", notification_id)
        await conn.execute(
            """
            WITH agg AS (
                SELECT count(*) FILTER (WHERE status IN ('pending', 'sending')) AS open,
                       count(*) FILTER (WHERE status = 'sent') AS sent,
                       min(sent_at) AS first_sent, max(dead_at) AS last_dead,
                       string_agg(channel::text || ': ' || last_error, '; ' ORDER BY channel)
                           FILTER (WHERE status = 'dead') AS failures
                  FROM notification_deliveries WHERE notification_id = $1
            )
            UPDATE notifications n
               SET sent_at = coalesce(n.sent_at, agg.first_sent),
                   status = CASE WHEN agg.open > 0 THEN n.status
                                 WHEN agg.sent > 0 THEN 'sent'::notification_status
                                 ELSE 'dead'::notification_status END,
                   failed_at = CASE WHEN agg.open = 0 AND agg.sent = 0 THEN agg.last_dead ELSE n.failed_at END,
                   failure_reason = CASE WHEN agg.open = 0 THEN left(agg.failures, 500) ELSE n.failure_reason END
              FROM agg
             WHERE n.id = $1 AND n.status = 'sending'
            """,
            notification_id,
        )

    async def backlog(self, now: datetime) -> Backlog:
        async with self._pool.acquire() as conn:
            r = await conn.fetchrow(
                """
                SELECT (SELECT count(*) FROM notifications
                         WHERE status = 'pending' AND ($2::uuid[] IS NULL OR organization_id = ANY($2::uuid[])))
                           AS notifications_pending,
                       count(*) FILTER (WHERE status = 'pending') AS pending,
                       count(*) FILTER (WHERE status = 'sending') AS sending,
                       count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= $1) AS due,
                       coalesce(extract(epoch FROM $1 - min(next_attempt_at) FILTER (
                           WHERE status = 'pending' AND next_attempt_at <= $1)), 0)::float8 AS oldest
                  FROM notification_deliveries
                 WHERE status IN ('pending', 'sending') AND ($2::uuid[] IS NULL OR organization_id = ANY($2::uuid[]))
                """,
                now,
                self._orgs,
            )
        assert r is not None
        return Backlog(r["notifications_pending"], r["pending"], r["sending"], r["due"], r["oldest"])

    async def alert_counts(self) -> dict[tuple[str, bool, str], int]:
        """vital_alerts rows by (severity, retrospective, status), for the alert metrics."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT severity::text AS severity, retrospective, status::text AS status, count(*) AS n
                  FROM vital_alerts
                 WHERE $1::uuid[] IS NULL OR organization_id = ANY($1::uuid[])
                 GROUP BY 1, 2, 3
                """,
                self._orgs,
            )
        return {(r["severity"], r["retrospective"], r["status"]): r["n"] for r in rows}
