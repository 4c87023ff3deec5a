"""The PHI audit trail: reads the app reports with audit_read(), changes logged by triggers, unforgeable rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from tests.roles import RoleSettings
from tests.security import catalog
from tests.security.conftest import Connect
from tests.security.tenant import tenant_transaction
from tests.security.tenant_rows import Tenant

Conn = psycopg.Connection[Any]
# Tenant-owned tables the app may change without a row-by-row change log, and why. Adding one is a review.
UNAUDITED = {
    "audit_logs": "the log itself (append-only)",
    "organizations": "tenant settings, no patient data",
    "healthcare_providers": "staff directory, no patient data",
    "care_plan_templates": "clinical templates, no patient data",
    "service_plans": "price list",
    "user_devices": "push tokens of staff and patients' apps, no health data",
}


def _audit(db: Conn, entity_type: str, entity_id: UUID) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT action, db_role, actor_user_id, organization_id, details, before, after FROM audit_logs"
        " WHERE entity_type = %s AND entity_id = %s ORDER BY occurred_at, id",
        (entity_type, entity_id),
    ).fetchall()


def test_every_table_the_app_changes_is_audited_or_reviewed(db: Conn, role_settings: RoleSettings) -> None:
    app = catalog.privileges(db, role_settings.postgres_user)
    writable = {t.name for t in catalog.tenant_tables(db) if {"INSERT", "UPDATE", "DELETE"} & set(app.get(t.name, {}))}
    audited = {
        str(r[0])
        for r in db.execute(
            "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE t.tgfoid = 'audit_row_change'::regproc AND NOT t.tgisinternal"
        ).fetchall()
    }
    assert sorted(writable - audited - set(UNAUDITED)) == []
    assert sorted(set(UNAUDITED) & audited) == []  # stale exemptions


def test_a_read_is_recorded_once_per_entity_for_the_actor_and_tenant(
    db: Conn, connect: Connect, tenants: tuple[Tenant, Tenant], role_settings: RoleSettings
) -> None:
    a, _ = tenants
    clinician = a.provider.user_id
    with connect("app") as conn, tenant_transaction(conn, a.id, actor=clinician, commit=True):
        written = conn.execute(
            "SELECT audit_read('patients', %s, 'chart review')", ([a.patient.id, a.patient.id, None],)
        ).fetchone()
    assert written == (1,)
    rows = [r for r in _audit(db, "patients", a.patient.id) if r[0] == "patients.read"]
    assert len(rows) == 1
    action, db_role, actor, organization, details, before, after = rows[0]
    assert (action, db_role, actor, organization) == ("patients.read", role_settings.postgres_user, clinician, a.id)
    assert details == {"source": "audit_read", "purpose": "chart review"}
    assert (before, after) == (None, None)


@pytest.mark.parametrize(
    ("tenant_set", "actor", "entity_type", "error"),
    [
        (False, "own", "patients", psycopg.errors.InsufficientPrivilege),
        (True, None, "patients", psycopg.errors.InvalidParameterValue),
        (True, "malformed", "patients", psycopg.errors.InvalidParameterValue),
        (True, "other-tenant", "patients", psycopg.errors.InvalidParameterValue),
        (True, "own", "vital_types", psycopg.errors.InvalidParameterValue),
        (True, "own", "no_such_table", psycopg.errors.InvalidParameterValue),
    ],
)
def test_a_read_that_cannot_be_audited_is_refused(
    connect: Connect,
    tenants: tuple[Tenant, Tenant],
    tenant_set: bool,
    actor: str | None,
    entity_type: str,
    error: type[Exception],
) -> None:
    a, b = tenants
    actors = {"own": str(a.provider.user_id), "other-tenant": str(b.provider.user_id), "malformed": "nobody"}
    with connect("app") as conn, pytest.raises(error), tenant_transaction(conn, a.id if tenant_set else None):
        if actor is not None:
            conn.execute("SELECT set_config('rpm.actor_user_id', %s, true)", (actors[actor],))
        conn.execute("SELECT audit_read(%s, %s)", (entity_type, [a.patient.id]))


def test_audit_rows_name_the_real_role_and_time_whatever_the_writer_claims(
    db: Conn, connect: Connect, tenants: tuple[Tenant, Tenant], role_settings: RoleSettings
) -> None:
    a, _ = tenants
    entity = uuid4()
    with connect("app") as conn, tenant_transaction(conn, a.id, commit=True):
        conn.execute(
            "INSERT INTO audit_logs (organization_id, action, entity_type, entity_id, db_role, occurred_at)"
            " VALUES (%s, 'test.forged', 'test', %s, %s, '2000-01-01')",
            (a.id, entity, role_settings.postgres_admin_user),
        )
    row = db.execute("SELECT db_role, occurred_at FROM audit_logs WHERE entity_id = %s", (entity,)).fetchone()
    assert row is not None
    assert row[0] == role_settings.postgres_user
    assert abs(row[1] - datetime.now(UTC)) < timedelta(minutes=1)


def test_the_app_cannot_read_another_tenants_audit_trail(
    connect: Connect, tenants: tuple[Tenant, Tenant], db: Conn
) -> None:
    a, b = tenants
    assert _audit(db, "patients", b.patient.id)  # the insert of B's patient was logged
    with connect("app") as conn, tenant_transaction(conn, a.id):
        seen = conn.execute("SELECT count(*) FROM audit_logs WHERE entity_id = %s", (b.patient.id,)).fetchone()
    assert seen == (0,)


def test_app_changes_of_phi_are_logged_with_secrets_redacted(
    db: Conn, connect: Connect, tenants: tuple[Tenant, Tenant], role_settings: RoleSettings
) -> None:
    a, _ = tenants
    actor = a.provider.user_id
    alert = db.execute("SELECT id FROM vital_alerts WHERE organization_id = %s", (a.id,)).fetchone()
    assert alert is not None
    with connect("app") as conn, tenant_transaction(conn, a.id, actor=actor, commit=True):
        symptom = conn.execute(
            "INSERT INTO symptoms (organization_id, patient_id, code, name, severity, source, onset_at, reported_by)"
            " VALUES (%s, %s, 'nausea', 'Nausea', 'mild', 'provider', now(), %s) RETURNING id",
            (a.id, a.patient.id, actor),
        ).fetchone()
        conn.execute("UPDATE users SET phone = '+15550100', password_hash = 'new-hash' WHERE id = %s", (actor,))
        conn.execute("UPDATE notifications SET status = 'read', read_at = now() WHERE organization_id = %s", (a.id,))
        conn.execute(
            "UPDATE vital_alerts SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = %s"
            " WHERE id = %s",
            (actor, alert[0]),
        )
    assert symptom is not None
    assert [r[0] for r in _audit(db, "symptoms", symptom[0])] == ["symptoms.insert"]
    user_change = _audit(db, "users", actor)[-1]
    assert (user_change[0], user_change[1], user_change[2]) == ("users.update", role_settings.postgres_user, actor)
    assert user_change[5]["password_hash"] == user_change[6]["password_hash"] == "[redacted]"
    assert user_change[6]["phone"] == "+15550100"
    acknowledged = _audit(db, "vital_alerts", alert[0])
    assert [(r[0], r[2]) for r in acknowledged] == [("vital_alerts.update", actor)]
    assert acknowledged[0][6]["status"] == "acknowledged"
    notified = db.execute(
        "SELECT count(*) FROM audit_logs WHERE organization_id = %s AND action = 'notifications.update'", (a.id,)
    ).fetchone()
    assert notified == (1,)


def test_the_pipelines_bookkeeping_is_not_logged_row_by_row(
    db: Conn, connect: Connect, tenants: tuple[Tenant, Tenant]
) -> None:
    _, b = tenants
    with connect("processor") as conn:
        changed = conn.execute(
            "UPDATE notifications SET status = 'sent', sent_at = now() WHERE organization_id = %s", (b.id,)
        ).rowcount
        alert = conn.execute(
            "UPDATE vital_alerts SET revision = revision + 1 WHERE organization_id = %s RETURNING id", (b.id,)
        ).fetchone()
    assert changed == 1 and alert is not None
    logged = db.execute(
        "SELECT count(*) FROM audit_logs WHERE organization_id = %s"
        " AND action IN ('notifications.update', 'vital_alerts.update')",
        (b.id,),
    ).fetchone()
    assert logged == (0,)
