"""Least privilege of the database roles: what each may touch, checked against the catalog, and probed live.

ingest has an exact manifest (any new grant fails here until reviewed). The processors and the app have rules:
secrets they never read, tables they never write, things nobody but the owner may do. Every rule is also probed
by running a statement that would do nothing if allowed and must be refused.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.roles import Role, RoleSettings
from tests.security import catalog
from tests.security.conftest import Connect

Conn = psycopg.Connection[Any]
Grants = dict[str, dict[str, frozenset[str] | None]]

INGEST: Grants = {
    "audit_logs": {"INSERT": None},
    "device_assignments": {"SELECT": None},
    "device_kind_vitals": {"SELECT": None},
    "devices": {
        "SELECT": frozenset(
            {"connection_status", "id", "kind", "last_seen_at", "organization_id", "revoked_at", "serial", "status"}
        ),
        "UPDATE": frozenset({"connection_status", "last_seen_at"}),
    },
    # UPDATE only so the relay can lock rows (SELECT ... FOR UPDATE SKIP LOCKED, migration 0102).
    "ingest_outbox": {"SELECT": None, "INSERT": None, "UPDATE": None, "DELETE": None},
    "ingest_rejections": {"SELECT": None, "INSERT": None, "UPDATE": frozenset({"replay_result", "replayed_at"})},
    "patients": {"SELECT": frozenset({"id", "organization_id"})},
    "vital_readings": {"SELECT": None, "INSERT": None},
    "vital_type_units": {"SELECT": None},
    "vital_types": {"SELECT": None},
}

# Columns holding secrets, and who must never read them.
CREDENTIALS = {"password_hash", "credential_hash", "two_factor_secret", "two_factor_backup_codes"}
CREDENTIALS |= {"email_verification_token_hash"}
WEBHOOK_SECRETS = {"secret", "previous_secret"}
NEVER_READ: dict[Role, set[str]] = {
    "ingest": CREDENTIALS | WEBHOOK_SECRETS,
    "processor": CREDENTIALS,  # the dispatcher signs webhooks, so it reads their secrets
    "app": {"credential_hash"} | WEBHOOK_SECRETS,  # the app verifies log-ins and TOTP itself
}
# Tables a role may never change (INSERT, UPDATE or DELETE).
NEVER_WRITE: dict[Role, set[str]] = {
    "processor": {
        "organizations",
        "users",
        "healthcare_providers",
        "patients",
        "patient_provider_assignments",
        "care_plans",
        "care_plan_templates",
        "vital_requirements",
        "devices",
        "device_assignments",
        "patient_consents",
        "patient_subscriptions",
        "service_plans",
        "vital_readings",
        "ingest_rejections",
        "ingest_outbox",
        "webhook_endpoints",
        "recipient_preferences",
        "escalation_policies",
        "vital_types",
        "vital_type_units",
    },
    "app": {
        "vital_readings",
        "ingest_rejections",
        "ingest_outbox",
        "processor_states",
        "processor_quarantine",
        "notification_deliveries",
        "delivery_attempts",
        "vital_types",
        "vital_type_units",
        "device_kind_vitals",
        "symptom_rules",
        "schema_migrations",
    },
}
# Append-only for everyone but the owner.
APPEND_ONLY = {"audit_logs", "delivery_attempts"}
# Relations without an organization that the app may read: shared reference data, reviewed.
APP_REFERENCE_DATA = {"vital_types", "vital_type_units", "device_kind_vitals", "symptom_rules"}


def _grants(db: Conn, role_settings: RoleSettings, role: Role) -> Grants:
    name = {
        "ingest": role_settings.postgres_ingest_user,
        "processor": role_settings.postgres_processor_user,
        "app": role_settings.postgres_user,
        "owner": role_settings.postgres_admin_user,
    }[role]
    return catalog.privileges(db, name)


def _probe(privilege: str, table: str, column: str) -> sql.Composed:
    """A statement needing exactly `privilege` on `table`.`column` that changes nothing if it is allowed."""
    t, c = sql.Identifier(table), sql.Identifier(column)
    return {
        "SELECT": sql.SQL("SELECT {} FROM {} WHERE false").format(c, t),
        "INSERT": sql.SQL("INSERT INTO {} ({}) SELECT NULL WHERE false").format(t, c),
        "UPDATE": sql.SQL("UPDATE {} SET {} = NULL WHERE false").format(t, c),
        "DELETE": sql.SQL("DELETE FROM {} WHERE false").format(t),
    }[privilege]


def _refused(conn: Conn, statement: sql.Composed) -> bool:
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return True  # dropped meanwhile by another session (a partition, a scratch table): nothing to reach
    return False


def test_ingest_holds_exactly_its_manifest(db: Conn, role_settings: RoleSettings) -> None:
    assert _grants(db, role_settings, "ingest") == INGEST


def test_ingest_is_refused_everything_outside_its_manifest(
    db: Conn, connect: Connect, role_settings: RoleSettings
) -> None:
    allowed: list[str] = []
    probes = 0
    with connect("ingest") as conn:
        for relation in catalog.relations(db):
            kind = db.execute(
                "SELECT relkind FROM pg_class WHERE oid = to_regclass('public.' || quote_ident(%s))", (relation,)
            )
            row = kind.fetchone()
            if row is None or row[0] not in ("r", "p", "v"):
                continue
            cols = catalog.columns(db, relation)
            # Views here are not updatable: a write to one fails before any privilege check.
            for privilege in catalog.PRIVILEGES if row[0] != "v" else ("SELECT",):
                granted = INGEST.get(relation, {})
                for col in cols:
                    if privilege in granted and (granted[privilege] is None or col.name in (granted[privilege] or ())):
                        continue
                    if privilege in ("INSERT", "UPDATE") and col.generated:
                        continue
                    probes += 1
                    if not _refused(conn, _probe(privilege, relation, col.name)):
                        allowed.append(f"{privilege} {relation}.{col.name}")
                    if privilege == "DELETE":
                        break
    assert allowed == []
    assert probes > 500


@pytest.mark.parametrize("role", ["ingest", "processor", "app"])
def test_no_service_role_reads_secrets(db: Conn, connect: Connect, role_settings: RoleSettings, role: Role) -> None:
    secret_columns = [
        (str(r[0]), str(r[1]))
        for r in db.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v')"
            "   AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY(%s)",
            (sorted(NEVER_READ[role]),),
        ).fetchall()
    ]
    assert len(secret_columns) >= 2
    with connect(role) as conn:
        readable = [f"{t}.{c}" for t, c in secret_columns if not _refused(conn, _probe("SELECT", t, c))]
    assert readable == []


@pytest.mark.parametrize("role", ["processor", "app"])
def test_service_roles_never_write_what_is_not_theirs(
    db: Conn, connect: Connect, role_settings: RoleSettings, role: Role
) -> None:
    grants = _grants(db, role_settings, role)
    existing = set(catalog.relations(db))
    violations = [
        f"{privilege} {table}"
        for table in sorted(NEVER_WRITE[role] & existing)
        for privilege in ("INSERT", "UPDATE", "DELETE")
        if privilege in grants.get(table, {})
    ]
    violations += [
        f"{privilege} {table}"
        for table in sorted(APPEND_ONLY & existing)
        for privilege in ("UPDATE", "DELETE")
        if privilege in grants.get(table, {})
    ]
    # The processors never delete clinical data: only their own engine state.
    violations += [
        f"DELETE {t.name}"
        for t in catalog.tenant_tables(db)
        if role == "processor" and "DELETE" in grants.get(t.name, {})
    ]
    assert violations == []
    with connect(role) as conn:
        for table in sorted((NEVER_WRITE[role] | APPEND_ONLY) & existing):
            first = next(c.name for c in catalog.columns(db, table) if not c.generated)
            assert _refused(conn, _probe("DELETE", table, first)), table
            assert _refused(conn, _probe("UPDATE", table, first)), table


def test_everything_the_app_reads_is_tenant_scoped_or_reviewed_reference_data(
    db: Conn, role_settings: RoleSettings
) -> None:
    grants = _grants(db, role_settings, "app")
    tenant_owned = {t.name for t in catalog.tenant_tables(db) if t.rls_enabled}
    invoker_views = {
        str(r[0])
        for r in db.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'v'"
            " AND 'security_invoker=true' = ANY(reloptions)"
        ).fetchall()
    }
    unscoped = sorted(set(grants) - tenant_owned - invoker_views - APP_REFERENCE_DATA)
    assert unscoped == []


def test_only_the_owner_owns_alters_or_truncates(db: Conn, role_settings: RoleSettings) -> None:
    roles = [role_settings.postgres_user, role_settings.postgres_ingest_user, role_settings.postgres_processor_user]
    attributes = db.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)"
        " AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication)",
        (roles,),
    ).fetchall()
    assert attributes == []
    owner_row = db.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", (role_settings.postgres_admin_user,)
    ).fetchone()
    assert owner_row == (False,)
    dangerous = db.execute(
        "SELECT r, c.relname, p FROM unnest(%s::text[]) AS r, pg_class c, unnest(ARRAY['TRUNCATE', 'REFERENCES',"
        " 'TRIGGER']) AS p WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')"
        " AND has_table_privilege(r, c.oid, p)",
        (roles,),
    ).fetchall()
    assert dangerous == []
    owned = db.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace"
        " AND pg_get_userbyid(c.relowner) <> %s",
        (role_settings.postgres_admin_user,),
    ).fetchall()
    assert owned == []
    create = db.execute(
        "SELECT r FROM unnest(%s::text[]) AS r WHERE has_schema_privilege(r, 'public', 'CREATE')", (roles,)
    ).fetchall()
    assert create == []
