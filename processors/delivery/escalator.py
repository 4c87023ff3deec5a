"""The escalator loop: finds open, unacknowledged critical episodes whose next escalation is due (pure rule in
`escalation`), and in one transaction per episode records the step on it and writes the notifications that page
the next role. The dispatcher then delivers those like any other notification."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from processors.delivery.escalation import Episode, Escalation, EscalationPolicy, next_escalation
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.store import TRANSIENT_ERRORS
from processors.delivery.timing import Clock

__all__ = ["Escalator", "escalation_key"]

logger = logging.getLogger(__name__)


def escalation_key(alert_id: UUID, level: int, user_id: UUID) -> str:
    """The idempotency key of the page sent to `user_id` for escalation `level` of an episode."""
    return f"vital_alert_escalation:{alert_id}:{level}:{user_id}"


@dataclass(frozen=True, slots=True)
class _Candidate:
    episode: Episode
    organization_id: UUID
    patient_id: UUID
    vital_type: str
    direction: str
    policy: EscalationPolicy


class Escalator:
    """`organizations` restricts it to those tenants (empty: all), like the dispatcher."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        default_policy: EscalationPolicy,
        metrics: DeliveryMetrics,
        clock: Clock,
        *,
        organizations: frozenset[UUID] = frozenset(),
        interval_s: float = 15.0,
    ) -> None:
        self._pool = pool
        self._default = default_policy
        self._metrics = metrics
        self._clock = clock
        self._orgs: list[UUID] | None = sorted(organizations, key=str) or None
        self._interval = interval_s

    async def run_once(self) -> list[Escalation]:
        """Escalates every episode whose next step is due now; returns the steps taken."""
        now = self._clock()
        candidates = await self._candidates()
        if not candidates:
            return []
        teams = await self._teams([c.patient_id for c in candidates], now)
        done: list[Escalation] = []
        for c in candidates:
            team = teams.get(c.patient_id, {})
            step = next_escalation(c.episode, c.policy, team.keys())
            if step is None or step.due_at > now:
                continue
            if await self._escalate(c, step, team[step.role], now):
                self._metrics.escalations.labels(step.role).inc()
                done.append(step)
        return done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except TRANSIENT_ERRORS as exc:
                self._metrics.loop_errors.labels("escalate").inc()
                logger.warning("escalation pass failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def _candidates(self) -> list[_Candidate]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT a.id, a.organization_id, a.patient_id, a.severity::text AS severity, a.status::text AS status,
                       a.retrospective, a.opened_at, a.escalation_level, a.escalated_at, a.direction::text AS direction,
                       t.code AS vital_type, p.escalate_after, p.chain::text[] AS chain
                  FROM vital_alerts a
                  JOIN vital_types t ON t.id = a.vital_type_id
                  LEFT JOIN escalation_policies p ON p.organization_id = a.organization_id
                 WHERE a.status = 'open' AND a.severity = 'critical' AND NOT a.retrospective
                   AND ($1::uuid[] IS NULL OR a.organization_id = ANY($1::uuid[]))
                 ORDER BY a.opened_at
                """,
                self._orgs,
            )
        found = []
        for r in rows:
            policy = self._default
            if r["escalate_after"] is not None:
                policy = EscalationPolicy(r["escalate_after"], tuple(r["chain"]))
            episode = Episode(
                alert_id=r["id"],
                severity=r["severity"],
                status=r["status"],
                retrospective=r["retrospective"],
                opened_at=r["opened_at"],
                level=r["escalation_level"],
                escalated_at=r["escalated_at"],
            )
            found.append(
                _Candidate(episode, r["organization_id"], r["patient_id"], r["vital_type"], r["direction"], policy)
            )
        return found

    async def _teams(self, patients: list[UUID], at: datetime) -> dict[UUID, dict[str, list[UUID]]]:
        """Active care-team members with an active user, by patient and role."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                SELECT a.patient_id, a.role::text AS role, h.user_id
                  FROM patient_provider_assignments a
                  JOIN healthcare_providers h ON h.id = a.provider_id
                  JOIN users u ON u.id = h.user_id AND u.is_active AND u.deleted_at IS NULL
                 WHERE a.patient_id = ANY($1::uuid[]) AND a.started_at <= $2 AND (a.ended_at IS NULL OR a.ended_at > $2)
                 ORDER BY h.user_id
                """,
                list(set(patients)),
                at,
            )
        teams: dict[UUID, dict[str, list[UUID]]] = defaultdict(lambda: defaultdict(list))
        for r in rows:
            teams[r["patient_id"]][r["role"]].append(r["user_id"])
        return teams

    async def _escalate(self, c: _Candidate, step: Escalation, users: list[UUID], now: datetime) -> bool:
        """Records the step and pages `users`, unless the episode changed meanwhile (acknowledged, resolved,
        escalated by another escalator): the row lock orders this against an acknowledgement."""
        async with self._pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "SELECT status::text AS status, escalation_level FROM vital_alerts WHERE id = $1 FOR UPDATE",
                step.alert_id,
            )
            if current is None or current["status"] != "open" or current["escalation_level"] >= step.level:
                return False
            await conn.execute(
                """
                INSERT INTO alert_escalations (organization_id, alert_id, level, role, due_at, escalated_at,
                                               notified_user_ids)
                VALUES ($1, $2, $3, $4::care_team_role, $5, $6, $7::uuid[])
                """,
                c.organization_id,
                step.alert_id,
                step.level,
                step.role,
                step.due_at,
                now,
                users,
            )
            await conn.execute(
                "UPDATE vital_alerts SET escalation_level = $2, escalated_at = $3 WHERE id = $1",
                step.alert_id,
                step.level,
                now,
            )
            waited = _minutes(now - c.episode.opened_at)
            title = f"Escalated: critical {c.vital_type.replace('_', ' ')} {c.direction}, unacknowledged {waited} min"
            role = step.role.replace("_", " ")
            body = f"Nobody acknowledged this critical alert: it is escalated to you as {role}."
            payload = {
                "alert_id": str(step.alert_id),
                "escalation_level": step.level,
                "escalated_to_role": step.role,
                "severity": "critical",
                "change": "escalated",
                "opened_at": c.episode.opened_at.isoformat(),
            }
            await conn.executemany(
                """
                INSERT INTO notifications (organization_id, recipient_user_id, patient_id, type, priority, channel,
                                           title, body, payload, idempotency_key, scheduled_for)
                VALUES ($1, $2, $3, 'vital_alert', 'critical', 'in_app', $4, $5, $6::jsonb, $7, $8)
                ON CONFLICT (idempotency_key) DO NOTHING
                """,
                [
                    (
                        c.organization_id,
                        user,
                        c.patient_id,
                        title,
                        body,
                        json.dumps(payload),
                        escalation_key(step.alert_id, step.level, user),
                        now,
                    )
                    for user in users
                ],
            )
        logger.info(
            "alert %s escalated to level %d (%s), %d recipients", step.alert_id, step.level, step.role, len(users)
        )
        return True


def _minutes(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() // 60))
