"""One organization with at least one row in every tenant-owned table, written as the schema owner.

The isolation tests need the other tenant's rows to exist everywhere they look. A table added later has no maker
here until someone writes one: `missing_makers` names it and the isolation test fails with that list, instead of
silently checking an empty table.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from tests import factories

Conn = psycopg.Connection[Any]


@dataclass(slots=True)
class Tenant:
    """The rows made for one organization (ids of the main ones, for tests that need them)."""

    organization: factories.Organization
    patient: factories.Patient
    provider: factories.Provider
    device: factories.Device
    requirement_id: UUID
    notification_id: UUID | None = None
    alert_id: UUID | None = None
    tables: set[str] = field(default_factory=set)

    @property
    def id(self) -> UUID:
        return self.organization.id


def _one(conn: Conn, query: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _reading(conn: Conn, t: Tenant) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    conn.execute(
        "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value, original_value,"
        " original_unit, measured_at, received_at, message_id, metadata)"
        " VALUES (%s, %s, %s, %s, 1, 72, 72, '/min', %s, %s, 'sec-1', '{}')",
        (uuid.uuid4(), t.id, t.patient.id, t.device.id, now - timedelta(minutes=5), now),
    )


def _rejection(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO ingest_rejections (topic, claimed_serial, device_id, organization_id, reason, detail, payload,"
        " payload_size) VALUES (%s, %s, %s, %s, 'invalid_json', 'test', %s, 3)",
        (f"devices/{t.device.serial}/readings", t.device.serial, t.device.id, t.id, secrets.token_bytes(3)),
    )


def _audit(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO audit_logs (organization_id, action, entity_type, entity_id) VALUES (%s, 'test.row', 'test', %s)",
        (t.id, uuid.uuid4()),
    )


def _template(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO care_plan_templates (organization_id, code, name) VALUES (%s, %s, 'Own template')",
        (t.id, factories.unique("tpl").replace("-", "_")),
    )


def _notification(conn: Conn, t: Tenant) -> None:
    t.notification_id = _one(
        conn,
        "INSERT INTO notifications (organization_id, recipient_user_id, patient_id, type, title, body,"
        " idempotency_key) VALUES (%s, %s, %s, 'message', 'Hello', 'Body', %s) RETURNING id",
        (t.id, t.provider.user_id, t.patient.id, factories.unique("idem")),
    )


def _symptom(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO symptoms (organization_id, patient_id, code, name, severity, source, onset_at)"
        " VALUES (%s, %s, 'dizziness', 'Dizziness', 'mild', 'patient', now())",
        (t.id, t.patient.id),
    )


def _schedule(conn: Conn, t: Tenant) -> None:
    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    event = _one(
        conn,
        "INSERT INTO scheduled_events (organization_id, patient_id, kind, title, scheduled_for, timezone, local_date,"
        " local_time, window_start, window_end) VALUES (%s, %s, 'medication', 'Pill', %s, 'UTC', %s, %s, %s, %s)"
        " RETURNING id",
        (t.id, t.patient.id, at, at.date(), at.time(), at - timedelta(minutes=30), at + timedelta(minutes=30)),
    )
    conn.execute(
        "INSERT INTO adherence_records (organization_id, patient_id, scheduled_event_id, status, source, occurred_at)"
        " VALUES (%s, %s, %s, 'completed', 'patient', %s)",
        (t.id, t.patient.id, event, at),
    )


def _push_token(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO user_devices (organization_id, user_id, platform, push_token) VALUES (%s, %s, 'ios', %s)",
        (t.id, t.provider.user_id, secrets.token_hex(16)),
    )


def _billing(conn: Conn, t: Tenant) -> None:
    plan = _one(
        conn,
        "INSERT INTO service_plans (organization_id, code, name, price_minor) VALUES (%s, %s, 'Plan', 100)"
        " RETURNING id",
        (t.id, factories.unique("plan").replace("-", "_")),
    )
    conn.execute(
        "INSERT INTO patient_subscriptions (organization_id, patient_id, service_plan_id, current_period_start,"
        " current_period_end) VALUES (%s, %s, %s, now(), now() + interval '30 days')",
        (t.id, t.patient.id, plan),
    )


def _consent(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO patient_consents (organization_id, patient_id, consent_type, version)"
        " VALUES (%s, %s, 'telehealth', 'v1')",
        (t.id, t.patient.id),
    )


def _delivery(conn: Conn, t: Tenant) -> None:
    assert t.notification_id is not None
    conn.execute(
        "INSERT INTO webhook_endpoints (organization_id, name, url, secret)"
        " VALUES (%s, 'hook', 'https://x.test/h', %s)",
        (t.id, secrets.token_hex(20)),
    )
    conn.execute(
        "INSERT INTO recipient_preferences (user_id, organization_id) VALUES (%s, %s)", (t.provider.user_id, t.id)
    )
    conn.execute(
        "INSERT INTO escalation_policies (organization_id, escalate_after, chain)"
        " VALUES (%s, interval '10 minutes', '{nurse,primary_physician}')",
        (t.id,),
    )
    delivery = _one(
        conn,
        "INSERT INTO notification_deliveries (notification_id, organization_id, channel, target_id, priority,"
        " next_attempt_at) VALUES (%s, %s, 'in_app', %s, 'normal', now()) RETURNING id",
        (t.notification_id, t.id, t.provider.user_id),
    )
    conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, organization_id, attempt, started_at, duration_ms, outcome)"
        " VALUES (%s, %s, 1, now(), 5, 'sent')",
        (delivery, t.id),
    )


def _alert(conn: Conn, t: Tenant) -> None:
    t.alert_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO vital_alerts (id, organization_id, patient_id, vital_type_id, direction, severity, rule,"
        " requirement_id, requirement_version, opened_at, updated_at, last_change, trigger_reading_ids, value,"
        " threshold, revision) VALUES (%s, %s, %s, 1, 'high', 'warning', 'threshold', %s, 1, now(), now(),"
        " 'opened', %s, 130, 110, 1)",
        (t.alert_id, t.id, t.patient.id, t.requirement_id, [uuid.uuid4()]),
    )


def _escalation(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO alert_escalations (organization_id, alert_id, level, role, due_at, escalated_at,"
        " notified_user_ids) VALUES (%s, %s, 1, 'nurse', now(), now(), %s)",
        (t.id, t.alert_id, [t.provider.user_id]),
    )


def _quarantined(conn: Conn, t: Tenant) -> None:
    conn.execute(
        "INSERT INTO processor_quarantine (organization_id, patient_id, event_key, event, error_class, sqlstate,"
        " error_message) VALUES (%s, %s, 'tick', '{\"tick\": \"2026-01-01T00:00:00Z\"}', 'CheckViolationError',"
        " '23514', 'test')",
        (t.id, t.patient.id),
    )


# Each maker fills the tables it names (in this order: later makers use earlier rows). The core tables
# (organizations, users, healthcare_providers, patients, patient_provider_assignments, care_plans,
# vital_requirements, devices, device_assignments) are filled by `make_tenant` through the shared factories.
MAKERS: list[tuple[frozenset[str], Callable[[Conn, Tenant], None]]] = [
    (frozenset({"vital_readings"}), _reading),
    (frozenset({"vital_alerts"}), _alert),
    (frozenset({"alert_escalations"}), _escalation),
    (frozenset({"processor_quarantine"}), _quarantined),
    (frozenset({"ingest_rejections"}), _rejection),
    (frozenset({"audit_logs"}), _audit),
    (frozenset({"care_plan_templates"}), _template),
    (frozenset({"notifications"}), _notification),
    (frozenset({"symptoms"}), _symptom),
    (frozenset({"scheduled_events", "adherence_records"}), _schedule),
    (frozenset({"user_devices"}), _push_token),
    (frozenset({"service_plans", "patient_subscriptions"}), _billing),
    (frozenset({"patient_consents"}), _consent),
    (
        frozenset(
            {
                "webhook_endpoints",
                "recipient_preferences",
                "escalation_policies",
                "notification_deliveries",
                "delivery_attempts",
            }
        ),
        _delivery,
    ),
]
CORE = frozenset(
    {
        "organizations",
        "users",
        "healthcare_providers",
        "patients",
        "patient_provider_assignments",
        "care_plans",
        "vital_requirements",
        "devices",
        "device_assignments",
    }
)


def missing_makers(tables: set[str]) -> set[str]:
    covered = set(CORE).union(*(names for names, _ in MAKERS))
    return tables - covered


def _exists(conn: Conn, table: str) -> bool:
    row = conn.execute("SELECT to_regclass('public.' || quote_ident(%s)) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def make_tenant(conn: Conn) -> Tenant:
    """An organization with a patient (care plan, requirement, care team), a device assigned to them, and a row in
    every other tenant-owned table that exists in this database."""
    org = factories.create_organization(conn)
    patient = factories.create_patient(conn, org.id)
    factories.create_care_plan(conn, patient)
    requirement = factories.create_requirement(conn, patient, "heart_rate", warning_high=110.0)
    provider = factories.create_provider(conn, org.id)
    factories.add_to_care_team(conn, patient, provider, role="nurse")
    device = factories.create_device(conn, org.id, assign_to=patient)
    tenant = Tenant(org, patient, provider, device, requirement, tables=set(CORE))
    for names, maker in MAKERS:
        if all(_exists(conn, name) for name in names):
            maker(conn, tenant)
            tenant.tables |= names
    return tenant


def describe(tenant: Tenant) -> str:
    return json.dumps({"organization": str(tenant.id), "tables": sorted(tenant.tables)})
