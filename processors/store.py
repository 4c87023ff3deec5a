"""The processors' writes to PostgreSQL (idempotent), and engine state: stored, or rebuilt from the database.

Every statement is safe to repeat: episodes are upserted by id and only a newer revision changes a row;
notifications, symptoms and scheduled checks are inserted under their unique keys with ON CONFLICT DO NOTHING;
an adherence outcome only ever improves. So a batch may be written twice (a redelivery after a crash between
commit and acknowledgement) and the tables end the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from processors.adherence import AdherenceChange, CheckStatus, Slot
from processors.alerts import AlertChange, ChangeKind, Direction, Rule, Severity
from processors.codec import dump_state, load_state
from processors.context import EngineConfig, PatientContext
from processors.engine import Output, forget, open_alert_ids
from processors.errors import StateError
from processors.notifications import Notification
from processors.state import DeviceState, Episode, PatientState, Sample, VitalState
from processors.symptoms import SymptomFlag

__all__ = [
    "LOCK_CLASS",
    "bootstrap_state",
    "load_states",
    "lock_key",
    "lock_patients",
    "newest_states",
    "reconcile",
    "save_states",
    "write_outputs",
]

logger = logging.getLogger(__name__)

Connection = Any  # asyncpg.Connection: the library is untyped

# pg_advisory_xact_lock(int4, int4) namespace for "one patient's engine state" ("RPRO").
_LOCK_CLASS = 0x5250524F

_UPSERT_ALERT = """
INSERT INTO vital_alerts (id, organization_id, patient_id, vital_type_id, direction, severity, status, rule,
                          requirement_id, requirement_version, retrospective, opened_at, updated_at, resolved_at,
                          last_change, trigger_reading_ids, value, threshold, last_notified_at, revision)
VALUES ($1, $2, $3, $4, $5::vital_alert_direction, $6::vital_alert_severity, $7::vital_alert_status,
        $8::vital_alert_rule, $9, $10, $11, $12, $13, $14, $15::vital_alert_change, $16::uuid[], $17, $18, $19, $20)
ON CONFLICT (id) DO UPDATE SET
    severity = EXCLUDED.severity,
    -- A clear resolves; an escalation or promotion that paged asks for a new acknowledgement; anything else
    -- keeps what people did with the episode.
    status = CASE
        WHEN EXCLUDED.status = 'resolved' THEN EXCLUDED.status
        WHEN EXCLUDED.last_change IN ('escalated', 'promoted') AND NOT EXCLUDED.retrospective THEN EXCLUDED.status
        ELSE vital_alerts.status END,
    acknowledged_at = CASE
        WHEN EXCLUDED.last_change IN ('escalated', 'promoted') AND NOT EXCLUDED.retrospective THEN NULL
        ELSE vital_alerts.acknowledged_at END,
    acknowledged_by = CASE
        WHEN EXCLUDED.last_change IN ('escalated', 'promoted') AND NOT EXCLUDED.retrospective THEN NULL
        ELSE vital_alerts.acknowledged_by END,
    rule = EXCLUDED.rule,
    requirement_id = EXCLUDED.requirement_id,
    requirement_version = EXCLUDED.requirement_version,
    retrospective = EXCLUDED.retrospective,
    updated_at = EXCLUDED.updated_at,
    resolved_at = EXCLUDED.resolved_at,
    last_change = EXCLUDED.last_change,
    trigger_reading_ids = EXCLUDED.trigger_reading_ids,
    value = EXCLUDED.value,
    threshold = EXCLUDED.threshold,
    last_notified_at = EXCLUDED.last_notified_at,
    revision = EXCLUDED.revision
WHERE vital_alerts.revision < EXCLUDED.revision
  -- A person may resolve an episode (migration 0510); nothing the engine says afterwards reopens that row.
  AND vital_alerts.status <> 'resolved'
"""
_INSERT_SYMPTOM = """
INSERT INTO symptoms (id, organization_id, patient_id, code, name, severity, source, onset_at, device_id,
                      related_reading_id, related_measured_at, vital_alert_id, resolved_at)
SELECT $1, $2, $3, $4, $5, $6::symptom_severity, 'device', $7, $8, $9, $10, a.id, a.resolved_at
  FROM vital_alerts a WHERE a.id = $11
ON CONFLICT DO NOTHING
"""
_RESOLVE_SYMPTOMS = "UPDATE symptoms SET resolved_at = $2 WHERE vital_alert_id = $1 AND resolved_at IS NULL"
_INSERT_NOTIFICATION = """
INSERT INTO notifications (organization_id, recipient_user_id, patient_id, type, priority, title, body, payload,
                           idempotency_key, scheduled_for)
VALUES ($1, $2, $3, $4::notification_type, $5::notification_priority, $6, $7, $8::jsonb, $9, $10)
ON CONFLICT (idempotency_key) DO NOTHING
"""
# The no-op update makes RETURNING give the existing row's id when the check already exists (it may have been
# created by the seed or by another runner with another id).
_UPSERT_CHECK = """
INSERT INTO scheduled_events (id, organization_id, patient_id, kind, title, vital_type_id, requirement_id,
                              scheduled_for, timezone, local_date, local_time, window_start, window_end,
                              idempotency_key, details)
VALUES ($1, $2, $3, 'vital_check', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
RETURNING id
"""
_CANCEL_CHECK = """
UPDATE scheduled_events SET status = 'cancelled', cancelled_at = $2,
       cancel_reason = 'no longer expected by the current requirement version'
 WHERE id = $1 AND status = 'scheduled'
"""
_UPSERT_ADHERENCE = """
INSERT INTO adherence_records (organization_id, patient_id, scheduled_event_id, status, source, occurred_at,
                               reading_id, reading_measured_at, expected_count, received_count)
VALUES ($1, $2, $3, $4::adherence_status, $5::adherence_source, $6, $7, $8, $9, $10)
ON CONFLICT (scheduled_event_id) DO UPDATE SET
    status = EXCLUDED.status, source = EXCLUDED.source, occurred_at = EXCLUDED.occurred_at,
    reading_id = EXCLUDED.reading_id, reading_measured_at = EXCLUDED.reading_measured_at,
    received_count = EXCLUDED.received_count
WHERE array_position('{missed,partial,late,completed}'::text[], adherence_records.status::text)
        < array_position('{missed,partial,late,completed}'::text[], EXCLUDED.status::text)
   OR (adherence_records.status = EXCLUDED.status AND adherence_records.received_count < EXCLUDED.received_count)
"""
_SAVE_STATE = """
INSERT INTO processor_states (patient_id, state, version, updated_at) VALUES ($1, $2, $3, now())
ON CONFLICT (patient_id) DO UPDATE SET state = EXCLUDED.state, version = EXCLUDED.version, updated_at = now()
"""


LOCK_CLASS = _LOCK_CLASS


def lock_key(patient_id: UUID) -> int:
    """The second key of the patient's pg_advisory_xact_lock(LOCK_CLASS, key)."""
    return int.from_bytes(patient_id.bytes[-4:], "big", signed=True)


async def lock_patients(conn: Connection, patient_ids: Collection[UUID]) -> None:
    """Serialises work on these patients' state across processes for the rest of the transaction (in a fixed
    order, so two batches sharing patients cannot deadlock)."""
    keys = sorted({lock_key(p) for p in patient_ids})
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, k) FROM (SELECT unnest($2::int[]) AS k ORDER BY 1) AS keys",
        _LOCK_CLASS,
        keys,
    )


async def load_states(conn: Connection, patient_ids: Collection[UUID]) -> dict[UUID, PatientState]:
    """The stored states of these patients; an unreadable one is logged and left out (rebuilt instead)."""
    rows = await conn.fetch(
        "SELECT patient_id, state FROM processor_states WHERE patient_id = ANY($1::uuid[])",
        list(patient_ids),
    )
    states: dict[UUID, PatientState] = {}
    for row in rows:
        try:
            states[row["patient_id"]] = load_state(row["state"])
        except StateError as exc:
            logger.warning("processor state of patient %s is rebuilt: %s", row["patient_id"], exc)
    return states


async def save_states(conn: Connection, states: Iterable[PatientState]) -> None:
    await conn.executemany(_SAVE_STATE, [(s.patient_id, dump_state(s), s.version) for s in states])


async def newest_states(conn: Connection, cached: Mapping[UUID, PatientState | None]) -> dict[UUID, PatientState]:
    """The current state of each patient: the cached one if the table holds that very version, else the table's
    (the cache missed a write: a crash between a commit and the cache update, or another process). A patient the
    table has no row for has no state (it is rebuilt), whatever the cache says."""
    rows = await conn.fetch(
        "SELECT patient_id, version FROM processor_states WHERE patient_id = ANY($1::uuid[])", list(cached)
    )
    versions = {r["patient_id"]: r["version"] for r in rows}
    current = {p: s for p, s in cached.items() if s is not None and versions.get(p) == s.version}
    stale = [p for p in versions if p not in current]
    if stale:
        current.update(await load_states(conn, stale))
    return current


async def write_outputs(conn: Connection, outputs: Sequence[Output]) -> None:
    """Writes one batch of engine outputs, in an order that satisfies the foreign keys (call in a transaction)."""
    alerts = [o for o in outputs if isinstance(o, AlertChange)]
    if alerts:
        await conn.executemany(_UPSERT_ALERT, [_alert_args(a) for a in alerts])
    symptoms = [o for o in outputs if isinstance(o, SymptomFlag)]
    if symptoms:
        await conn.executemany(_INSERT_SYMPTOM, [_symptom_args(s) for s in symptoms])
    cleared = [(a.alert_id, a.resolved_at) for a in alerts if a.kind is ChangeKind.CLEARED]
    if cleared:
        await conn.executemany(_RESOLVE_SYMPTOMS, cleared)
    notifications = [o for o in outputs if isinstance(o, Notification)]
    if notifications:
        await conn.executemany(_INSERT_NOTIFICATION, [_notification_args(n) for n in notifications])
    for change in (o for o in outputs if isinstance(o, AdherenceChange)):
        await _write_check(conn, change)


_RESOLVED_BY_PEOPLE = """
SELECT id, patient_id, resolved_at FROM vital_alerts WHERE id = ANY($1::uuid[]) AND status = 'resolved'
"""


async def reconcile(conn: Connection, states: dict[UUID, PatientState]) -> dict[UUID, PatientState]:
    """These states without the episodes a person resolved meanwhile (and those episodes' symptoms resolved)."""
    believed_open = [alert_id for state in states.values() for alert_id in open_alert_ids(state)]
    if not believed_open:
        return states
    rows = await conn.fetch(_RESOLVED_BY_PEOPLE, believed_open)
    if not rows:
        return states
    await conn.executemany(_RESOLVE_SYMPTOMS, [(r["id"], r["resolved_at"]) for r in rows])
    resolved: dict[UUID, set[UUID]] = {}
    for r in rows:
        resolved.setdefault(r["patient_id"], set()).add(r["id"])
    return {p: forget(state, resolved.get(p, set())) for p, state in states.items()}


def _alert_args(a: AlertChange) -> tuple[Any, ...]:
    return (
        a.alert_id, a.organization_id, a.patient_id, a.vital_type_id, a.direction.value, a.severity.value,
        a.status.value, a.rule.value, a.requirement_id, a.requirement_version, a.retrospective, a.opened_at,
        a.changed_at, a.resolved_at, a.kind.value, list(a.trigger_reading_ids), a.value, a.threshold,
        a.last_notified_at, a.revision,
    )  # fmt: skip


def _symptom_args(s: SymptomFlag) -> tuple[Any, ...]:
    return (
        s.symptom_id, s.organization_id, s.patient_id, s.code, s.name, s.severity.value, s.onset_at, s.device_id,
        s.reading_id, s.measured_at, s.alert_id,
    )  # fmt: skip


def _notification_args(n: Notification) -> tuple[Any, ...]:
    return (
        n.organization_id, n.recipient_user_id, n.patient_id, n.type.value, n.priority.value, n.title, n.body,
        json.dumps(n.payload), n.key, n.scheduled_for,
    )  # fmt: skip


async def _write_check(conn: Connection, change: AdherenceChange) -> None:
    slot = change.slot
    details = {
        "expected_count": slot.expected_count,
        "quota": slot.quota,
        "requirement_version": slot.requirement_version,
    }
    event_id = await conn.fetchval(
        _UPSERT_CHECK,
        slot.slot_id, change.organization_id, change.patient_id,
        f"{slot.vital_type.replace('_', ' ').capitalize()} check", slot.vital_type_id, slot.requirement_id,
        slot.scheduled_for, slot.timezone, slot.local_date, slot.local_time, slot.window_start, slot.window_end,
        slot.key, json.dumps(details),
    )  # fmt: skip
    if slot.status is CheckStatus.SCHEDULED:
        return
    if slot.status is CheckStatus.CANCELLED:
        await conn.execute(_CANCEL_CHECK, event_id, change.changed_at)
        return
    await conn.execute(
        _UPSERT_ADHERENCE,
        change.organization_id, change.patient_id, event_id, slot.status.value,
        "system" if slot.status is CheckStatus.MISSED else "device",
        slot.reading_measured_at, slot.reading_id, slot.reading_measured_at, slot.expected_count,
        slot.received_count,
    )  # fmt: skip


# -- rebuilding a state from the database -----------------------------------------------------------------------

_OPEN_EPISODES = """
SELECT a.id, a.vital_type_id, a.direction::text, a.severity::text, a.rule::text, a.retrospective, a.opened_at,
       a.updated_at, a.requirement_id, a.requirement_version, a.trigger_reading_ids, a.value, a.threshold,
       a.last_notified_at, a.revision,
       coalesce((SELECT array_agg(s.code ORDER BY s.code) FROM symptoms s WHERE s.vital_alert_id = a.id), '{}')
           AS symptoms
  FROM vital_alerts a WHERE a.patient_id = $1 AND a.status <> 'resolved'
"""
# The patient's recent readings received before the event at hand: history for the rules. Not a claim that they
# were judged: a committed reading may still be in hand-off (an outbox row after a crash, a Kafka topic).
_RECENT_READINGS = """
SELECT id, vital_type_id, measured_at, received_at, value FROM (
    SELECT r.*, row_number() OVER (PARTITION BY r.vital_type_id ORDER BY r.measured_at DESC) AS newest
      FROM vital_readings r
     WHERE r.patient_id = $1 AND r.measured_at >= $2 AND r.received_at < $3) AS recent
 WHERE newest <= $4
 ORDER BY measured_at, id
"""
_LAST_SEEN = """
SELECT d.device_id,
       (SELECT max(r.measured_at) FROM vital_readings r
         WHERE r.patient_id = $1 AND r.device_id = d.device_id AND r.received_at < $2) AS last_measured_at,
       (SELECT max((n.payload ->> 'silent_since')::timestamptz) FROM notifications n
         WHERE n.patient_id = $1 AND n.type = 'device_offline' AND n.payload ->> 'device_id' = d.device_id::text)
           AS reported_silence_from
  FROM unnest($3::uuid[]) AS d (device_id)
"""
_OPEN_CHECKS = """
SELECT e.id, e.idempotency_key, e.requirement_id, e.vital_type_id, t.code, e.timezone, e.local_date, e.local_time,
       e.scheduled_for, e.window_start, e.window_end, e.status::text,
       coalesce(a.expected_count, (e.details ->> 'expected_count')::int, 1) AS expected_count,
       coalesce(a.received_count, 0) AS received_count, a.reading_id, a.reading_measured_at,
       coalesce((e.details ->> 'quota')::boolean, false) AS quota
  FROM scheduled_events e
  JOIN vital_types t ON t.id = e.vital_type_id
  LEFT JOIN adherence_records a ON a.scheduled_event_id = e.id
 WHERE e.patient_id = $1 AND e.kind = 'vital_check' AND e.requirement_id IS NOT NULL AND e.window_end >= $2
 ORDER BY e.scheduled_for, e.idempotency_key
"""


async def bootstrap_state(
    conn: Connection, context: PatientContext, at: datetime, config: EngineConfig
) -> PatientState:
    """A state for a patient the runner has no state for, from what the database shows before `at`.

    Open episodes, the recent readings received before `at` (the event at hand and anything after it are still to
    be judged), when each device last measured, and the vital checks still in play. No reading counts as seen:
    one still in hand-off (an ingest crash, a clock tick that reached the patient first) is judged when it
    arrives, in place of its history copy, so a rebuild never lets a committed reading go unjudged.
    """
    span = config.retention
    for r in context.requirements:
        for minutes in (r.sustained_minutes, r.clear_minutes):
            if minutes is not None:
                span = max(span, timedelta(minutes=minutes))
        if r.trend_window_hours is not None:
            span = max(span, timedelta(hours=r.trend_window_hours))
    vitals: dict[int, VitalState] = {}
    samples: dict[int, list[Sample]] = {}
    for row in await conn.fetch(_RECENT_READINGS, context.patient_id, at - span, at, config.max_samples):
        samples.setdefault(row["vital_type_id"], []).append(Sample(row["id"], row["measured_at"], row["value"]))
    episodes: dict[int, dict[Direction, Episode]] = {}
    for row in await conn.fetch(_OPEN_EPISODES, context.patient_id):
        episode = Episode(
            alert_id=row["id"],
            direction=Direction(row["direction"]),
            severity=Severity(row["severity"]),
            rule=Rule(row["rule"]),
            retrospective=row["retrospective"],
            opened_at=row["opened_at"],
            changed_at=row["updated_at"],
            requirement_id=row["requirement_id"],
            requirement_version=row["requirement_version"],
            trigger_reading_ids=tuple(row["trigger_reading_ids"]),
            value=row["value"],
            threshold=row["threshold"],
            last_notified_at=row["last_notified_at"],
            revision=row["revision"],
            symptoms=tuple(row["symptoms"]),
        )
        episodes.setdefault(row["vital_type_id"], {})[episode.direction] = episode
    slots: dict[int, list[Slot]] = {}
    versions = {r.id: r.version for r in context.requirements}
    keep_for = max(config.slot_retention, config.late_limit)
    for row in await conn.fetch(_OPEN_CHECKS, context.patient_id, at - keep_for):
        slots.setdefault(row["vital_type_id"], []).append(
            Slot(
                slot_id=row["id"],
                key=row["idempotency_key"],
                requirement_id=row["requirement_id"],
                requirement_version=versions.get(row["requirement_id"], 1),
                vital_type_id=row["vital_type_id"],
                vital_type=row["code"],
                timezone=row["timezone"],
                local_date=row["local_date"],
                local_time=row["local_time"],
                scheduled_for=row["scheduled_for"],
                window_start=row["window_start"],
                window_end=row["window_end"],
                expected_count=row["expected_count"],
                quota=row["quota"],
                status=CheckStatus(row["status"]),
                received_count=row["received_count"],
                reading_id=row["reading_id"],
                reading_measured_at=row["reading_measured_at"],
            )
        )
    for type_id in set(samples) | set(episodes) | set(slots):
        checks = slots.get(type_id, [])
        vitals[type_id] = VitalState(
            samples=tuple(samples.get(type_id, ())),
            episodes=episodes.get(type_id, {}),
            slots=tuple(checks),
            scheduled_until=max((s.window_start for s in checks), default=None),
        )
    devices: dict[UUID, DeviceState] = {}
    device_ids = [d.device_id for d in context.devices]
    if device_ids:
        for row in await conn.fetch(_LAST_SEEN, context.patient_id, at, device_ids):
            devices[row["device_id"]] = DeviceState(row["last_measured_at"], row["reported_silence_from"])
    # The engine knew the patient at least since its oldest data here (silences count from there, not from now).
    known_since = [at, *(s.measured_at for v in samples.values() for s in v[:1])]
    known_since.extend(d.last_measured_at for d in devices.values() if d.last_measured_at is not None)
    return PatientState(
        patient_id=context.patient_id,
        started_at=min(known_since),
        vitals=vitals,
        devices=devices,
    )
