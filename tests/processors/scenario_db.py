"""A scenario's world in the real database (created as the schema owner), and its outcome read back from the
tables the processors write: vital_alerts, notifications, symptoms, scheduled_events + adherence_records."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from tests import factories
from tests.processors.scenario import (
    VITAL_TYPES,
    AlertRow,
    CheckRow,
    NotificationRow,
    Outcome,
    RequirementSpec,
    ScenarioSpec,
    StepSpec,
    SymptomRow,
    World,
    alert_subject,
    notification_subject,
    reading_times,
)

Conn = psycopg.Connection[Any]

_PROVIDER_TYPES = {
    "primary_physician": "physician",
    "specialist": "physician",
    "nurse": "nurse",
    "care_manager": "care_manager",
    "pharmacist": "pharmacist",
}


def ensure_partitions(db: Conn, days: set[date]) -> None:
    """Daily partitions of vital_readings for the scenario's (possibly historical) days, named as ingest's
    maintenance names them, so its function finds them already there."""
    for day in sorted(days):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        db.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF vital_readings FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(f"vital_readings_{day:%Y%m%d}"),
                sql.Literal(start),
                sql.Literal(start + timedelta(days=1)),
            )
        )


def create_world(db: Conn, spec: ScenarioSpec) -> World:
    """The organization, patient, care plan, care team, devices and initial requirement versions of `spec`."""
    org = factories.create_organization(db)
    patient = factories.create_patient(db, org.id, timezone=spec.timezone)
    factories.create_care_plan(db, patient, status="active" if spec.monitored else "paused")
    users: dict[str, UUID] = {}
    for member in spec.care_team:
        provider = factories.create_provider(db, org.id, provider_type=_PROVIDER_TYPES.get(member.role, "other"))
        factories.add_to_care_team(
            db, patient, provider, role=member.role, is_primary=member.role == "primary_physician",
            started_at=member.since, ended_at=member.until,
        )  # fmt: skip
        users[member.name] = provider.user_id
    devices: dict[str, UUID] = {}
    for device in spec.devices:
        created = factories.create_device(db, org.id, kind=device.kind, assign_to=patient, since=device.since)
        if device.until is not None:
            db.execute(
                "UPDATE device_assignments SET assigned_to = %s WHERE device_id = %s", (device.until, created.id)
            )
        devices[device.name] = created.id
    for requirement in spec.requirements:
        add_requirement(db, World(spec, organization_id=org.id, patient_id=patient.id), requirement)
    ensure_partitions(db, {t.astimezone(UTC).date() for t in reading_times(spec).values()})
    return World(spec, organization_id=org.id, patient_id=patient.id, users=users, devices=devices)


def add_requirement(db: Conn, world: World, spec: RequirementSpec) -> UUID:
    patient = factories.Patient(world.patient_id, world.patient_id, world.organization_id, world.spec.timezone)
    return factories.create_requirement(db, patient, spec.vital, effective_from=spec.since, **spec.columns())


def insert_reading(db: Conn, world: World, step: StepSpec) -> None:
    """What ingest would have committed for this step's reading."""
    r = world.reading(step)
    db.execute(
        "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value,"
        " original_value, original_unit, measured_at, received_at, message_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (r.reading_id, r.organization_id, r.patient_id, r.device_id, r.vital_type_id, r.value, r.value, r.unit,
         r.measured_at, r.received_at, f"scenario:{r.reading_id}"),
    )  # fmt: skip


def database_outcome(db: Conn, world: World) -> Outcome:
    """What the tables hold for the world's patient, read in one snapshot (a runner may be writing meanwhile)."""
    db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        return _outcome(db, world)
    finally:
        db.execute("COMMIT")


def _outcome(db: Conn, world: World) -> Outcome:
    names = world.names()
    codes = {type_id: code for code, (type_id, _) in VITAL_TYPES.items()}
    alert_rows = db.execute(
        "SELECT id, vital_type_id, direction::text, severity::text, status::text, rule::text, retrospective,"
        " opened_at, resolved_at, requirement_version, trigger_reading_ids"
        " FROM vital_alerts WHERE patient_id = %s",
        (world.patient_id,),
    ).fetchall()
    subjects = {row[0]: alert_subject(codes[row[1]], row[2], row[7]) for row in alert_rows}
    alerts = [
        AlertRow(
            opened_at=row[7].astimezone(UTC).isoformat(),
            vital=codes[row[1]],
            direction=row[2],
            severity=row[3],
            status=row[4],
            rule=row[5],
            retrospective=row[6],
            resolved_at=None if row[8] is None else row[8].astimezone(UTC).isoformat(),
            version=row[9],
            triggers=tuple(sorted(names[i] for i in row[10])),
        )
        for row in alert_rows
    ]
    notifications = [
        NotificationRow(
            at=row[0].astimezone(UTC).isoformat(),
            type=row[1],
            priority=row[2],
            to=names[row[3]],
            subject=notification_subject(row[4], subjects, names),
            change=row[4].get("change"),
        )
        for row in db.execute(
            "SELECT scheduled_for, type::text, priority::text, recipient_user_id, payload"
            " FROM notifications WHERE patient_id = %s",
            (world.patient_id,),
        ).fetchall()
    ]
    symptoms = [
        SymptomRow(
            code=row[0],
            alert=subjects[row[1]],
            reading=names[row[2]],
            onset_at=row[3].astimezone(UTC).isoformat(),
            resolved_at=None if row[4] is None else row[4].astimezone(UTC).isoformat(),
        )
        for row in db.execute(
            "SELECT code, vital_alert_id, related_reading_id, onset_at, resolved_at FROM symptoms"
            " WHERE patient_id = %s AND source = 'device'",
            (world.patient_id,),
        ).fetchall()
    ]
    checks = [
        CheckRow(
            vital=codes[row[0]],
            local=f"{row[1].isoformat()}T{row[2].strftime('%H:%M')}",
            status=row[3],
            reading=None if row[4] is None else names[row[4]],
            received=row[5],
        )
        for row in db.execute(
            "SELECT e.vital_type_id, e.local_date, e.local_time, e.status::text, a.reading_id,"
            " coalesce(a.received_count, 0)"
            " FROM scheduled_events e LEFT JOIN adherence_records a ON a.scheduled_event_id = e.id"
            " WHERE e.patient_id = %s AND e.kind = 'vital_check'",
            (world.patient_id,),
        ).fetchall()
    ]
    return Outcome(sorted(alerts), sorted(notifications), sorted(symptoms), sorted(checks))
