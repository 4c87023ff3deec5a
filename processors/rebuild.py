"""Rebuilding a patient's engine state from the tables, for a patient the runner holds no state of (its first
event, or its stored state was unreadable or removed)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from processors.adherence import CheckStatus, Slot
from processors.alerts import Direction, Rule, Severity
from processors.context import EngineConfig, PatientContext
from processors.state import DeviceState, Episode, PatientState, Sample, VitalState

__all__ = ["bootstrap_state"]

Connection = Any  # asyncpg.Connection: the library is untyped

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
