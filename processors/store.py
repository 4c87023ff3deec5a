"""The processors' reads and writes of PostgreSQL around a batch (idempotent), and the stored engine states.

A batch is two calls of server-side functions (migration 0203, which holds the output statements): `begin_batch`
(locks, state versions, freshness of cached contexts, episodes people resolved) and `write_batch` (episodes,
symptoms, notifications, states). Every statement is safe to repeat: episodes are upserted by id and only a newer
revision changes a row; notifications, symptoms and scheduled checks are inserted under their unique keys with
ON CONFLICT DO NOTHING; an adherence outcome only ever improves. So a batch may be written twice (a redelivery
after a crash between commit and acknowledgement) and the tables end the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pydantic_core

from processors.adherence import AdherenceChange, CheckStatus
from processors.alerts import AlertChange
from processors.codec import load_state
from processors.engine import Output, forget, open_alert_ids
from processors.errors import StateError
from processors.notifications import Notification
from processors.state import PatientState
from processors.symptoms import SymptomFlag

__all__ = [
    "LOCK_CLASS",
    "BatchStart",
    "begin_batch",
    "lock_key",
    "reconcile",
    "write_batch",
]

logger = logging.getLogger(__name__)

Connection = Any  # asyncpg.Connection: the library is untyped

# pg_advisory_xact_lock(int4, int4) namespace for "one patient's engine state" ("RPRO").
_LOCK_CLASS = 0x5250524F

_RESOLVE_SYMPTOMS = "UPDATE symptoms SET resolved_at = $2 WHERE vital_alert_id = $1 AND resolved_at IS NULL"
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


LOCK_CLASS = _LOCK_CLASS


def lock_key(patient_id: UUID) -> int:
    """The second key of the patient's pg_advisory_xact_lock(LOCK_CLASS, key)."""
    return int.from_bytes(patient_id.bytes[-4:], "big", signed=True)


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


# -- one batch in two calls (migration 0203) --------------------------------------------------------------------

_BEGIN_BATCH = """
SELECT kind, patient, alert, row_version, stored_state, resolved FROM processor_batch_begin($1, $2, $3, $4, $5, $6)
"""
_WRITE_BATCH = "SELECT processor_batch_write($1::jsonb, $2::jsonb, $3::jsonb, $4, $5, $6)"


@dataclass(frozen=True, slots=True)
class BatchStart:
    """What `begin_batch` found once the batch's patients were locked."""

    # The current state of each patient that has one: the cached one where the table holds that very version.
    states: dict[UUID, PatientState]
    # The patients whose state was read from the table (not the cache): episodes a person resolved are not yet
    # taken out of these (`reconcile` them).
    reloaded: set[UUID] = field(default_factory=set)
    # Number of requirement versions of each patient asked about (absent: none).
    requirement_versions: dict[UUID, int] = field(default_factory=dict)
    # Episodes the cached states hold open that a person resolved, by patient (their symptoms are resolved).
    resolved: dict[UUID, set[UUID]] = field(default_factory=dict)


async def begin_batch(
    conn: Connection,
    cached: Mapping[UUID, PatientState | None],
    context_patients: Collection[UUID],
) -> BatchStart:
    """In one round trip (call in a transaction): lock the patients of `cached`, take each one's current state
    (as `newest_states`), count the requirement versions of `context_patients`, and find the episodes the cached
    states believe open that a person resolved (as `reconcile`, for the cached states)."""
    patients = list(cached)
    believed_open = [a for state in cached.values() if state is not None for a in open_alert_ids(state)]
    rows = await conn.fetch(
        _BEGIN_BATCH,
        _LOCK_CLASS,
        sorted({lock_key(p) for p in patients}),
        patients,
        [None if (s := cached[p]) is None else s.version for p in patients],
        list(context_patients),
        believed_open,
    )
    start = BatchStart(states={})
    for row in rows:
        patient_id = row["patient"]
        if row["kind"] == "s":
            raw = row["stored_state"]
            state = cached[patient_id] if raw is None else _load(patient_id, raw)
            if state is None:
                continue
            if raw is not None:
                start.reloaded.add(patient_id)
            start.states[patient_id] = state
        elif row["kind"] == "r":
            start.requirement_versions[patient_id] = row["row_version"]
        else:
            start.resolved.setdefault(patient_id, set()).add(row["alert"])
    return start


def _load(patient_id: UUID, raw: bytes) -> PatientState | None:
    try:
        return load_state(raw)
    except StateError as exc:
        logger.warning("processor state of patient %s is rebuilt: %s", patient_id, exc)
        return None


async def write_batch(
    conn: Connection, outputs: Sequence[Output], states: Mapping[UUID, tuple[PatientState, bytes]]
) -> None:
    """Writes one batch's outputs and new states (`states`: each with its `dump_state` bytes) in one round trip,
    plus one or two statements per vital check that changed (rare: scheduling and adherence). Idempotent like
    the statements they replace (migration 0203); call in a transaction."""
    rounds: list[list[dict[str, Any]]] = []
    # Per patient: its current round and the episodes already in it.
    segments: dict[UUID, tuple[int, set[UUID]]] = {}
    symptoms: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    checks: list[AdherenceChange] = []
    for output in outputs:
        if isinstance(output, AlertChange):
            # Rows of one round are written by one statement, in order; an episode changed again starts the
            # patient's next round (one statement may not change a row twice), and the patient's later changes
            # follow it there (a clear must come before the next episode of that vital opens).
            n, in_round = segments.get(output.patient_id, (0, set()))
            if output.alert_id in in_round:
                n, in_round = n + 1, set()
            in_round.add(output.alert_id)
            segments[output.patient_id] = (n, in_round)
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(_alert_row(output))
        elif isinstance(output, SymptomFlag):
            symptoms.append(_symptom_row(output))
        elif isinstance(output, Notification):
            notifications.append(_notification_row(output))
        elif isinstance(output, AdherenceChange):
            checks.append(output)
    ids = list(states)
    await conn.execute(
        _WRITE_BATCH,
        _json(rounds),
        _json(symptoms),
        _json(notifications),
        ids,
        [states[p][1] for p in ids],
        [states[p][0].version for p in ids],
    )
    for change in checks:
        await _write_check(conn, change)


def _json(rows: object) -> str:
    return pydantic_core.to_json(rows).decode()


def _alert_row(a: AlertChange) -> dict[str, Any]:
    return {
        "id": a.alert_id, "organization_id": a.organization_id, "patient_id": a.patient_id,
        "vital_type_id": a.vital_type_id, "direction": a.direction.value, "severity": a.severity.value,
        "status": a.status.value, "rule": a.rule.value, "requirement_id": a.requirement_id,
        "requirement_version": a.requirement_version, "retrospective": a.retrospective, "opened_at": a.opened_at,
        "updated_at": a.changed_at, "resolved_at": a.resolved_at, "last_change": a.kind.value,
        "trigger_reading_ids": a.trigger_reading_ids, "value": a.value, "threshold": a.threshold,
        "last_notified_at": a.last_notified_at, "revision": a.revision,
    }  # fmt: skip


def _symptom_row(s: SymptomFlag) -> dict[str, Any]:
    return {
        "id": s.symptom_id, "organization_id": s.organization_id, "patient_id": s.patient_id, "code": s.code,
        "name": s.name, "severity": s.severity.value, "onset_at": s.onset_at, "device_id": s.device_id,
        "reading_id": s.reading_id, "measured_at": s.measured_at, "alert_id": s.alert_id,
    }  # fmt: skip


def _notification_row(n: Notification) -> dict[str, Any]:
    return {
        "organization_id": n.organization_id, "recipient_user_id": n.recipient_user_id, "patient_id": n.patient_id,
        "type": n.type.value, "priority": n.priority.value, "title": n.title, "body": n.body,
        "payload": n.payload, "idempotency_key": n.key, "scheduled_for": n.scheduled_for,
    }  # fmt: skip
