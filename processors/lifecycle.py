"""What people do with an alert episode: acknowledge, assign, resolve with an outcome note; and read them.

Every call runs as the user-facing app role, in one transaction scoped to the acting user's organization
(`rpm.organization_id`, row-level security) with the acting user named for the database's audit triggers
(`rpm.actor_user_id`), and writes one `audit_logs` row for the action itself ('vital_alert.acknowledge',
'vital_alert.assign', 'vital_alert.resolve') with the acting user, the episode's lifecycle fields before and
after, and the note. Acknowledging stops escalation (the escalator only escalates open episodes); resolving
re-arms the rule (the database tells the processors, see migration 0510).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.errors import ProcessorError

__all__ = [
    "Action",
    "Actor",
    "AlertNotFoundError",
    "AlertSummary",
    "InvalidTransitionError",
    "LifecycleError",
    "LifecycleSettings",
    "UnknownUserError",
    "acknowledge",
    "acting",
    "assign",
    "connect",
    "get_alert",
    "list_alerts",
    "resolve",
]

# The people who may act on episodes (users.role); patients and support staff may not.
_CARE_ROLES = ("provider", "care_manager", "admin")
_LIFECYCLE_COLUMNS = (
    "status",
    "acknowledged_at",
    "acknowledged_by",
    "assigned_to",
    "assigned_at",
    "resolved_at",
    "resolved_by",
    "resolution_note",
    "escalation_level",
)


class LifecycleSettings(BaseSettings):
    """The app role's connection (`POSTGRES_USER`/`POSTGRES_PASSWORD`), read by the alerts CLI."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 55432
    postgres_db: str = "rpm"
    postgres_user: str = "rpm_app"
    postgres_password: SecretStr = SecretStr("")

    def app_dsn(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.postgres_host,
            port=self.postgres_port,
            dbname=self.postgres_db,
            user=self.postgres_user,
            password=self.postgres_password.get_secret_value(),
        )


class LifecycleError(ProcessorError):
    """A lifecycle action that cannot be done as asked."""

    retriable: ClassVar[bool] = False


class UnknownUserError(LifecycleError):
    def __init__(self, who: str) -> None:
        super().__init__(f"no active care-team user {who!r} in this organization")


class AlertNotFoundError(LifecycleError):
    def __init__(self, alert_id: UUID) -> None:
        super().__init__(f"no alert {alert_id} in this organization")


class InvalidTransitionError(LifecycleError):
    def __init__(self, alert_id: UUID, action: str, status: str) -> None:
        self.status = status
        super().__init__(f"cannot {action} alert {alert_id}: it is {status}")


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    ASSIGN = "assign"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: UUID
    organization_id: UUID
    email: str


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """One episode as people see it (the `--json` form is `as_json()`)."""

    id: UUID
    patient_id: UUID
    mrn: str
    vital_type: str
    direction: str
    severity: str
    status: str
    retrospective: bool
    value: float
    threshold: float | None
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    assigned_to: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution_note: str | None
    escalation_level: int

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = (
                value.isoformat() if isinstance(value, datetime) else str(value) if isinstance(value, UUID) else value
            )
        return out


Conn = psycopg.Connection[dict[str, Any]]


def connect(settings: LifecycleSettings) -> Conn:
    """An app-role connection (autocommit; each action opens its own transaction)."""
    return psycopg.connect(settings.app_dsn(), autocommit=True, row_factory=dict_row)


def _lookup(conn: Conn, email: str) -> tuple[UUID, UUID] | None:
    # Before the tenant is known only the login lookup (migration 0400) may cross tenants.
    exists = conn.execute("SELECT to_regprocedure('user_login_lookup(text)') IS NOT NULL AS ok").fetchone()
    if exists and exists["ok"]:
        row = conn.execute("SELECT user_id, organization_id FROM user_login_lookup(%s)", (email,)).fetchone()
    else:  # a database without row-level security yet
        row = conn.execute(
            "SELECT id AS user_id, organization_id FROM users WHERE lower(email) = lower(%s) AND deleted_at IS NULL",
            (email,),
        ).fetchone()
    if row is None or row["user_id"] is None:
        return None
    return row["user_id"], row["organization_id"]


def _has_role(conn: Conn, user_id: UUID, roles: Collection[str]) -> bool:
    row = conn.execute(
        "SELECT 1 FROM users WHERE id = %s AND is_active AND deleted_at IS NULL AND role::text = ANY(%s)",
        (user_id, list(roles)),
    ).fetchone()
    return row is not None


@contextmanager
def acting(conn: Conn, email: str, roles: Collection[str], refused: Callable[[str], Exception]) -> Iterator[Actor]:
    """A transaction in the tenant of the active user `email` holding one of `roles`, with the user named for the
    audit triggers; `refused(email)` is raised for an unknown user or one without such a role."""
    found = _lookup(conn, email)
    if found is None:
        raise refused(email)
    user_id, organization_id = found
    with conn.transaction():
        conn.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(organization_id),))
        conn.execute("SELECT set_config('rpm.actor_user_id', %s, true)", (str(user_id),))
        if not _has_role(conn, user_id, roles):
            raise refused(email)
        yield Actor(user_id, organization_id, email)


def _acting(conn: Conn, email: str) -> contextlib.AbstractContextManager[Actor]:
    """A care-team user's transaction (provider, care manager or admin)."""
    return acting(conn, email, _CARE_ROLES, UnknownUserError)


_SUMMARY = """
SELECT a.id, a.patient_id, p.mrn, t.code AS vital_type, a.direction::text AS direction, a.severity::text AS severity,
       a.status::text AS status, a.retrospective, a.value, a.threshold, a.opened_at, a.updated_at,
       a.acknowledged_at, ack.email AS acknowledged_by, asg.email AS assigned_to, a.resolved_at,
       res.email AS resolved_by, a.resolution_note, a.escalation_level
  FROM vital_alerts a
  JOIN patients p ON p.id = a.patient_id
  JOIN vital_types t ON t.id = a.vital_type_id
  LEFT JOIN users ack ON ack.id = a.acknowledged_by
  LEFT JOIN users asg ON asg.id = a.assigned_to
  LEFT JOIN users res ON res.id = a.resolved_by
"""


def _summary(row: dict[str, Any]) -> AlertSummary:
    return AlertSummary(**row)


def list_alerts(
    conn: Conn,
    actor_email: str,
    *,
    statuses: tuple[str, ...] = ("open", "acknowledged"),
    patient_id: UUID | None = None,
    assigned_to_me: bool = False,
    limit: int = 50,
) -> list[AlertSummary]:
    """Episodes of the actor's organization, newest first."""
    with _acting(conn, actor_email) as actor:
        rows = conn.execute(
            _SUMMARY
            + """
             WHERE a.status::text = ANY(%(statuses)s)
               AND (%(patient)s::uuid IS NULL OR a.patient_id = %(patient)s::uuid)
               AND (NOT %(mine)s OR a.assigned_to = %(actor)s)
             ORDER BY a.opened_at DESC, a.id
             LIMIT %(limit)s
            """,
            {
                "statuses": list(statuses),
                "patient": patient_id,
                "mine": assigned_to_me,
                "actor": actor.user_id,
                "limit": limit,
            },
        ).fetchall()
        return [_summary(r) for r in rows]


def get_alert(conn: Conn, actor_email: str, alert_id: UUID) -> tuple[AlertSummary, list[dict[str, Any]]]:
    """One episode and its history: escalations and lifecycle actions, oldest first."""
    with _acting(conn, actor_email):
        row = conn.execute(_SUMMARY + " WHERE a.id = %s", (alert_id,)).fetchone()
        if row is None:
            raise AlertNotFoundError(alert_id)
        history = conn.execute(
            """
            SELECT e.escalated_at AS at, 'escalated' AS event, e.role::text AS detail, NULL AS actor
              FROM alert_escalations e WHERE e.alert_id = %(id)s
            UNION ALL
            SELECT l.occurred_at, substr(l.action, 13), l.details ->> 'note', u.email
              FROM audit_logs l LEFT JOIN users u ON u.id = l.actor_user_id
             WHERE l.entity_type = 'vital_alerts' AND l.entity_id = %(id)s AND l.action LIKE 'vital_alert.%%'
             ORDER BY 1
            """,
            {"id": alert_id},
        ).fetchall()
        return _summary(row), [{**h, "at": h["at"].isoformat()} for h in history]


def _act(
    conn: Conn,
    actor_email: str,
    alert_id: UUID,
    action: Action,
    allowed: tuple[str, ...],
    assignments: str,
    params: dict[str, Any],
    note: str | None = None,
) -> AlertSummary:
    columns = ", ".join(_LIFECYCLE_COLUMNS)
    with _acting(conn, actor_email) as actor:
        before = conn.execute(f"SELECT {columns} FROM vital_alerts WHERE id = %s FOR UPDATE", (alert_id,)).fetchone()
        if before is None:
            raise AlertNotFoundError(alert_id)
        if before["status"] not in allowed:
            raise InvalidTransitionError(alert_id, action.value, before["status"])
        if "assignee" in params and not _has_role(conn, params["assignee"], _CARE_ROLES):
            raise UnknownUserError(str(params["assignee"]))
        after = conn.execute(
            f"UPDATE vital_alerts SET {assignments} WHERE id = %(id)s RETURNING {columns}",
            {**params, "id": alert_id, "actor": actor.user_id},
        ).fetchone()
        assert after is not None
        if action is Action.RESOLVE:
            # Device-flagged symptoms resolve with their episode (as when the processors clear it).
            conn.execute(
                "UPDATE symptoms SET resolved_at = %s WHERE vital_alert_id = %s AND resolved_at IS NULL",
                (params["now"], alert_id),
            )
        conn.execute(
            """
            INSERT INTO audit_logs (organization_id, actor_user_id, action, entity_type, entity_id, before, after,
                                    details)
            VALUES (%s, %s, %s, 'vital_alerts', %s, %s, %s, %s)
            """,
            (
                actor.organization_id,
                actor.user_id,
                f"vital_alert.{action.value}",
                alert_id,
                Jsonb(json.loads(json.dumps(before, default=str))),
                Jsonb(json.loads(json.dumps(after, default=str))),
                Jsonb({"source": "alerts_cli", "note": note} if note else {"source": "alerts_cli"}),
            ),
        )
        row = conn.execute(_SUMMARY + " WHERE a.id = %s", (alert_id,)).fetchone()
        assert row is not None
        return _summary(row)


def acknowledge(conn: Conn, actor_email: str, alert_id: UUID, now: datetime, note: str | None = None) -> AlertSummary:
    """Acknowledges an open episode; stops its escalation."""
    return _act(
        conn,
        actor_email,
        alert_id,
        Action.ACKNOWLEDGE,
        ("open",),
        "status = 'acknowledged', acknowledged_at = %(now)s, acknowledged_by = %(actor)s",
        {"now": now},
        note,
    )


def assign(
    conn: Conn, actor_email: str, alert_id: UUID, assignee_email: str, now: datetime, note: str | None = None
) -> AlertSummary:
    """Assigns an unresolved episode to a care-team user of the same organization."""
    assignee = _lookup(conn, assignee_email)
    actor = _lookup(conn, actor_email)
    if assignee is None or actor is None or assignee[1] != actor[1]:
        raise UnknownUserError(assignee_email)
    return _act(
        conn,
        actor_email,
        alert_id,
        Action.ASSIGN,
        ("open", "acknowledged"),
        "assigned_to = %(assignee)s, assigned_at = %(now)s",
        {"now": now, "assignee": assignee[0]},
        note,
    )


def resolve(conn: Conn, actor_email: str, alert_id: UUID, now: datetime, note: str) -> AlertSummary:
    """Resolves an unresolved episode with an outcome note; re-arms the rule."""
    if not note.strip():
        raise LifecycleError("resolving needs an outcome note")
    return _act(
        conn,
        actor_email,
        alert_id,
        Action.RESOLVE,
        ("open", "acknowledged"),
        "status = 'resolved', resolved_at = greatest(%(now)s, opened_at), last_change = 'cleared',"
        " resolved_by = %(actor)s, resolution_note = %(note)s",
        {"now": now, "note": note.strip()},
        note.strip(),
    )
