"""Seed data for the platform tables around the core: service plans and subscriptions, consents, push tokens,
and a week of scheduled vital checks (plus medication reminders and a follow-up appointment) per patient.

Called by `scripts.seed` after the core seed, for its organizations. Idempotent: every row has a natural key
(plan code, external subscription id, patient + consent type + version, push token, event idempotency key), so a
second run adds nothing; on a later day it adds the checks of the days that came into the week.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]
DAYS = 7


@dataclass(frozen=True, slots=True)
class Plan:
    code: str
    name: str
    price_minor: int
    interval: str
    max_devices: int
    features: dict[str, Any]


PLANS = (
    Plan("rpm_essential", "RPM Essential", 4900, "month", 1, {"vitals": "one device", "nurse_review": "weekly"}),
    Plan("rpm_complete", "RPM Complete", 8900, "month", 3, {"vitals": "up to three devices", "nurse_review": "daily"}),
    Plan("rpm_complete_annual", "RPM Complete (annual)", 96000, "year", 3, {"vitals": "up to three devices"}),
)
# (consent type, document version, which patients: index % n == 0)
CONSENTS = (
    ("remote_monitoring", "2026-01", 1),
    ("privacy_notice", "2025-07", 1),
    ("telehealth", "2026-01", 2),
    ("sms_notifications", "2025-11", 3),
)
MEDICATIONS = {
    "hypertension_rpm": ("Lisinopril 10 mg", time(9, 0)),
    "heart_failure_rpm": ("Furosemide 40 mg", time(8, 0)),
    "diabetes_rpm": ("Metformin 500 mg", time(18, 0)),
}


@dataclass(frozen=True, slots=True)
class SeededPatient:
    index: int
    id: UUID
    organization_id: UUID
    user_id: UUID
    mrn: str
    timezone: str
    template: str | None
    devices: int
    primary_provider: UUID | None


@dataclass(frozen=True, slots=True)
class Schedule:
    requirement_id: UUID
    patient_id: UUID
    vital_type_id: int
    vital_type: str
    expected_per_day: int | None
    expected_times: tuple[time, ...]
    window_minutes: int


@dataclass(frozen=True, slots=True)
class Event:
    """A scheduled_events row; `key` is its idempotency key."""

    key: str
    kind: str
    title: str
    scheduled_for: datetime
    local_date: date
    local_time: time
    window_start: datetime
    window_end: datetime
    vital_type_id: int | None = None
    requirement_id: UUID | None = None
    provider_id: UUID | None = None
    details: dict[str, Any] | None = None


def instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time (fold=0: a time in a DST gap falls after it), as the processors."""
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def local_days(now: datetime, timezone: str, days: int = DAYS) -> list[date]:
    today = now.astimezone(ZoneInfo(timezone)).date()
    return [today + timedelta(days=n) for n in range(days)]


def vital_checks(schedule: Schedule, timezone: str, days: Sequence[date]) -> Iterator[Event]:
    """The checks of a requirement on these local days, keyed as the processors key them (migration 0150)."""
    zone = ZoneInfo(timezone)
    for day in days:
        if schedule.expected_times:
            half = timedelta(minutes=schedule.window_minutes)
            for at in schedule.expected_times:
                when = instant(day, at, zone)
                yield _check(schedule, day, at, when, when - half, when + half)
        elif schedule.expected_per_day is not None:
            # A daily quota: the whole local day is the window.
            start = instant(day, time(0), zone)
            yield _check(schedule, day, time(0), start, start, instant(day + timedelta(days=1), time(0), zone))


def _check(schedule: Schedule, day: date, at: time, when: datetime, start: datetime, end: datetime) -> Event:
    return Event(
        key=f"vital_check:{schedule.patient_id}:{schedule.vital_type}:{day.isoformat()}T{at:%H:%M}",
        kind="vital_check",
        title=f"Measure {schedule.vital_type.replace('_', ' ')}",
        scheduled_for=when,
        local_date=day,
        local_time=at,
        window_start=start,
        window_end=end,
        vital_type_id=schedule.vital_type_id,
        requirement_id=schedule.requirement_id,
    )


def other_events(patient: SeededPatient, days: Sequence[date]) -> Iterator[Event]:
    """A daily medication reminder for some plans, and one telehealth follow-up within the week."""
    zone = ZoneInfo(patient.timezone)
    medication = MEDICATIONS.get(patient.template or "")
    if medication is not None:
        name, at = medication
        for day in days:
            when = instant(day, at, zone)
            yield Event(
                key=f"medication:{patient.id}:{name}:{day.isoformat()}T{at:%H:%M}",
                kind="medication",
                title=f"Take {name}",
                scheduled_for=when,
                local_date=day,
                local_time=at,
                window_start=when - timedelta(hours=1),
                window_end=when + timedelta(hours=2),
                details={"medication": name, "route": "oral"},
            )
    day, at = days[1 + patient.index % (len(days) - 1)], time(10, 30)
    when = instant(day, at, zone)
    yield Event(
        # No date in the key: the follow-up is booked once, whatever day the seed runs again.
        key=f"appointment:{patient.id}:seed-follow-up",
        kind="appointment",
        title="Telehealth follow-up",
        scheduled_for=when,
        local_date=day,
        local_time=at,
        window_start=when,
        window_end=when + timedelta(minutes=30),
        provider_id=patient.primary_provider,
        details={"location": "telehealth", "duration_minutes": 30},
    )


def seed_platform(conn: Conn, organization_slugs: Sequence[str], *, now: datetime | None = None) -> dict[str, int]:
    """Seeds the platform tables for the patients of these organizations; returns row counts for them."""
    now = now or datetime.now(UTC)
    plans = _seed_plans(conn)
    patients = _patients(conn, organization_slugs)
    schedules = _schedules(conn, [p.id for p in patients])
    events: list[tuple[SeededPatient, Event]] = []
    for patient in patients:
        _subscribe(conn, patient, plans, now)
        _consent(conn, patient, now)
        days = local_days(now, patient.timezone)
        for schedule in schedules.get(patient.id, []):
            # Only checks still ahead or open: a check whose window closed before the seed ran was never asked
            # of the patient, and must not reach the care team as a missed measurement.
            events.extend((patient, e) for e in vital_checks(schedule, patient.timezone, days) if e.window_end > now)
        events.extend((patient, e) for e in other_events(patient, days))
    _insert_events(conn, events)
    _register_push_tokens(conn, organization_slugs)
    return counts(conn, organization_slugs)


def _seed_plans(conn: Conn) -> dict[str, UUID]:
    for plan in PLANS:
        conn.execute(
            "INSERT INTO service_plans (code, name, price_minor, billing_interval, max_devices_per_patient,"
            " trial_days, features, external_product_id, external_price_id)"
            " VALUES (%s, %s, %s, %s, %s, 14, %s, %s, %s)"
            " ON CONFLICT ((coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid)), code)"
            " DO NOTHING",
            (
                plan.code,
                plan.name,
                plan.price_minor,
                plan.interval,
                plan.max_devices,
                Jsonb(plan.features),
                f"prod_seed_{plan.code}",
                f"price_seed_{plan.code}",
            ),
        )
    rows = conn.execute(
        "SELECT code, id FROM service_plans WHERE organization_id IS NULL AND code = ANY(%s)",
        ([p.code for p in PLANS],),
    ).fetchall()
    return {str(code): UUID(str(i)) for code, i in rows}


def _patients(conn: Conn, organization_slugs: Sequence[str]) -> list[SeededPatient]:
    rows = conn.execute(
        """
        SELECT p.id, p.organization_id, p.user_id, p.mrn, p.timezone,
               (SELECT t.code FROM care_plans cp JOIN care_plan_templates t ON t.id = cp.template_id
                 WHERE cp.patient_id = p.id AND cp.status = 'active' ORDER BY cp.created_at LIMIT 1),
               (SELECT count(*) FROM device_assignments a
                 WHERE a.patient_id = p.id AND (a.assigned_to IS NULL OR a.assigned_to > now())),
               (SELECT a.provider_id FROM patient_provider_assignments a
                 WHERE a.patient_id = p.id AND a.is_primary AND a.ended_at IS NULL)
          FROM patients p JOIN organizations o ON o.id = p.organization_id
         WHERE o.slug = ANY(%s) AND p.deleted_at IS NULL
         ORDER BY o.slug, p.mrn
        """,
        (list(organization_slugs),),
    ).fetchall()
    return [
        SeededPatient(i, pid, org, user, mrn, tz, template, int(devices), provider)
        for i, (pid, org, user, mrn, tz, template, devices, provider) in enumerate(rows)
    ]


def _schedules(conn: Conn, patient_ids: Sequence[UUID]) -> dict[UUID, list[Schedule]]:
    rows = conn.execute(
        "SELECT r.id, r.patient_id, r.vital_type_id, t.code, r.expected_per_day, r.expected_times,"
        " r.expected_window_minutes"
        " FROM vital_requirements r JOIN vital_types t ON t.id = r.vital_type_id"
        " WHERE r.patient_id = ANY(%s) AND r.effective_to IS NULL"
        " AND (r.expected_per_day IS NOT NULL OR cardinality(r.expected_times) > 0)"
        " ORDER BY r.patient_id, t.code",
        (list(patient_ids),),
    ).fetchall()
    found: dict[UUID, list[Schedule]] = {}
    for rid, pid, type_id, code, per_day, times, window in rows:
        found.setdefault(pid, []).append(Schedule(rid, pid, type_id, code, per_day, tuple(times), window))
    return found


def _subscribe(conn: Conn, patient: SeededPatient, plans: dict[str, UUID], now: datetime) -> None:
    """A live subscription whose plan allows the patient's devices; a few trialing or past due, and every fifth
    patient with an earlier, cancelled one."""
    plan = (
        "rpm_essential"
        if patient.devices <= 1
        else ("rpm_complete_annual" if patient.index % 4 == 0 else "rpm_complete")
    )
    started = now - timedelta(days=90)
    status = "trialing" if patient.index % 9 == 4 else ("past_due" if patient.index % 11 == 7 else "active")
    period = timedelta(days=365 if plan.endswith("annual") else 30)
    period_start = started + period * ((now - started) // period)
    if patient.index % 5 == 0:
        _subscription(
            conn,
            patient,
            plans["rpm_essential"],
            "cancelled",
            f"sub_seed_{patient.mrn.lower()}_0",
            started=started - timedelta(days=200),
            period=(started - timedelta(days=30), started),
            ended=started,
        )
    _subscription(
        conn,
        patient,
        plans[plan],
        status,
        f"sub_seed_{patient.mrn.lower()}_1",
        started=started,
        period=(period_start, period_start + period),
        trial_ends=now + timedelta(days=10) if status == "trialing" else None,
    )


def _subscription(
    conn: Conn,
    patient: SeededPatient,
    plan_id: UUID,
    status: str,
    external_id: str,
    *,
    started: datetime,
    period: tuple[datetime, datetime],
    ended: datetime | None = None,
    trial_ends: datetime | None = None,
) -> None:
    conn.execute(
        "INSERT INTO patient_subscriptions (organization_id, patient_id, service_plan_id, status, started_at,"
        " trial_ends_at, current_period_start, current_period_end, cancelled_at, ended_at, external_customer_id,"
        " external_subscription_id)"
        " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
        " WHERE NOT EXISTS (SELECT 1 FROM patient_subscriptions WHERE patient_id = %s"
        "                    AND (external_subscription_id = %s OR (%s AND status IN"
        "                         ('trialing', 'active', 'past_due', 'paused'))))"
        " ON CONFLICT DO NOTHING",
        (
            patient.organization_id,
            patient.id,
            plan_id,
            status,
            started,
            trial_ends,
            *period,
            ended,
            ended,
            f"cus_seed_{patient.mrn.lower()}",
            external_id,
            patient.id,
            external_id,
            ended is None,
        ),
    )


def _consent(conn: Conn, patient: SeededPatient, now: datetime) -> None:
    granted = now - timedelta(days=90)
    grants: list[tuple[str, str, datetime, datetime | None]] = [
        (kind, version, granted, None) for kind, version, every in CONSENTS if patient.index % every == 0
    ]
    if patient.index % 4 == 1:
        # Data sharing re-consented to a new version: the old grant is revoked, the new one current.
        grants.append(("data_sharing", "2025-01", granted - timedelta(days=200), granted))
        grants.append(("data_sharing", "2026-01", granted, None))
    for kind, version, at, revoked in grants:
        conn.execute(
            "INSERT INTO patient_consents (organization_id, patient_id, consent_type, version, document_sha256,"
            " method, granted_at, granted_by, revoked_at, revoked_by, revocation_reason)"
            " SELECT %s, %s, %s, %s, %s, 'electronic', %s, %s, %s, %s, %s"
            " WHERE NOT EXISTS (SELECT 1 FROM patient_consents"
            "                    WHERE patient_id = %s AND consent_type = %s AND version = %s)",
            (
                patient.organization_id,
                patient.id,
                kind,
                version,
                hashlib.sha256(f"{kind} consent form {version}".encode()).hexdigest(),
                at,
                patient.user_id,
                revoked,
                patient.user_id if revoked else None,
                "superseded by a new version" if revoked else None,
                patient.id,
                kind,
                version,
            ),
        )


def _insert_events(conn: Conn, events: Sequence[tuple[SeededPatient, Event]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO scheduled_events (organization_id, patient_id, kind, title, vital_type_id, requirement_id,"
            " provider_id, scheduled_for, timezone, local_date, local_time, window_start, window_end, details,"
            " idempotency_key) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            [
                (
                    p.organization_id,
                    p.id,
                    e.kind,
                    e.title,
                    e.vital_type_id,
                    e.requirement_id,
                    e.provider_id,
                    e.scheduled_for,
                    p.timezone,
                    e.local_date,
                    e.local_time,
                    e.window_start,
                    e.window_end,
                    Jsonb(e.details or {}),
                    e.key,
                )
                for p, e in events
            ],
        )


def _register_push_tokens(conn: Conn, organization_slugs: Sequence[str]) -> None:
    """Every provider and every other patient has the app installed (an iOS or Android push token)."""
    users = conn.execute(
        "SELECT u.id, u.organization_id, u.role FROM users u JOIN organizations o ON o.id = u.organization_id"
        " WHERE o.slug = ANY(%s) AND u.deleted_at IS NULL ORDER BY u.email",
        (list(organization_slugs),),
    ).fetchall()
    for i, (user_id, org_id, role) in enumerate(users):
        if role == "patient" and i % 2:
            continue
        platform = "ios" if i % 3 else "android"
        conn.execute(
            "INSERT INTO user_devices (organization_id, user_id, platform, push_token, device_name, app_version,"
            " last_used_at) VALUES (%s, %s, %s, %s, %s, '3.2.0', now())"
            " ON CONFLICT (platform, push_token) DO NOTHING",
            (
                org_id,
                user_id,
                platform,
                hashlib.sha256(f"seed push token {user_id}".encode()).hexdigest(),
                "iPhone" if platform == "ios" else "Pixel",
            ),
        )


def counts(conn: Conn, organization_slugs: Sequence[str]) -> dict[str, int]:
    """Rows of the platform tables that belong to these organizations (plans: the shared ones)."""
    result = {}
    in_orgs = "organization_id IN (SELECT id FROM organizations WHERE slug = ANY(%s))"
    for table, where in (
        ("service_plans", "organization_id IS NULL AND code = ANY(%s)"),
        ("patient_subscriptions", in_orgs),
        ("patient_consents", in_orgs),
        ("user_devices", in_orgs),
        ("scheduled_events", in_orgs),
    ):
        arg = [p.code for p in PLANS] if table == "service_plans" else list(organization_slugs)
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", (arg,)).fetchone()
        assert row is not None
        result[table] = int(row[0])
    return result
