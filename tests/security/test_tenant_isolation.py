"""Tenant isolation by row-level security, checked on every tenant-owned table the catalog lists.

As the app role in tenant A: every row of tenant B is invisible and unchangeable, nothing can be written into B,
and without a tenant (including on a reused connection after a transaction ended) nothing at all is visible.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.roles import RoleSettings
from tests.security import catalog
from tests.security.conftest import Connect
from tests.security.tenant import tenant_transaction
from tests.security.tenant_rows import Tenant, missing_makers

Conn = psycopg.Connection[Any]
# Catalogues whose rows with a NULL organization are offered to every tenant (read-only for the app).
SHARED = {"care_plan_templates", "service_plans"}
# Owner-rights functions the app may call. Each one must confine itself to the caller's tenant or reveal no more
# than it documents; adding one is a security review.
# user_login_lookup: e-mail -> (user, organization) before log-in, nothing more.
# search_patients (0420): probes an owner-only name projection for candidates, then reads patients and users under
# their policies and an explicit filter on the transaction's tenant; no tenant or another one -> no rows
# (tests/security/test_patient_search.py holds it to the row-security result).
APP_DEFINER_FUNCTIONS = {"user_login_lookup", "search_patients"}


def _t(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _scope(table: catalog.TenantTable, partitioned: set[str], a: Tenant, b: Tenant) -> tuple[sql.Composed, list[Any]]:
    """Restricts the hot partitioned tables to the two tenants' patients, so checks stay index probes."""
    if table.name in partitioned:
        return sql.Composed([sql.SQL("patient_id = ANY(%s)")]), [[a.patient.id, b.patient.id]]
    return sql.Composed([sql.SQL("true")]), []


def _count(conn: Conn, query: sql.Composed, params: list[Any]) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


def _partitioned(db: Conn) -> set[str]:
    rows = db.execute("SELECT relname FROM pg_class WHERE relkind = 'p' AND relnamespace = 'public'::regnamespace")
    return {str(r[0]) for r in rows.fetchall()}


def test_every_tenant_owned_table_forces_row_security_with_the_tenant_policies(
    db: Conn, role_settings: RoleSettings
) -> None:
    app, owner = role_settings.postgres_user, role_settings.postgres_admin_user
    ingest, processor = role_settings.postgres_ingest_user, role_settings.postgres_processor_user
    tables = catalog.tenant_tables(db)
    assert len(tables) >= 20
    problems = []
    for table in tables:
        if not (table.rls_enabled and table.rls_forced):
            problems.append(f"{table.name}: row-level security is not enabled and forced")
        found = {p.name: p for p in catalog.policies(db, table.name)}
        match = f"({table.key} = current_organization_id())"
        expected: dict[str, tuple[tuple[str, ...], str, str, str | None]] = {
            "app_tenant": ((app,), "ALL", match, match),
            "owner_scope": (
                (owner,),
                "ALL",
                f"(session_is_trusted() OR {match})",
                f"(session_is_trusted() OR {match})",
            ),
            "pipeline_ingest": ((ingest,), "ALL", "true", "true"),
            "pipeline_processor": ((processor,), "ALL", "true", "true"),
        }
        if table.name in SHARED:
            expected["app_shared_read"] = ((app,), "SELECT", f"({table.key} IS NULL)", None)
        if table.name == "users":
            expected["owner_login_lookup"] = (
                (owner,),
                "SELECT",
                f"((CURRENT_USER = (parse_ident('\"{owner}\"'::text))[1]) AND "
                "(current_setting('rpm.scope'::text, true) = 'login'::text))",
                None,
            )
        actual = {name: (p.roles, p.command, p.using, p.check) for name, p in found.items()}
        if actual != expected:
            problems.append(f"{table.name}: policies {actual} != {expected}")
    assert problems == [], "call enable_tenant_isolation('<table>') in the migration that adds the table:\n" + (
        "\n".join(problems)
    )


def test_the_fixture_has_rows_of_both_tenants_in_every_tenant_owned_table(
    db: Conn, tenants: tuple[Tenant, Tenant]
) -> None:
    tables = catalog.tenant_tables(db)
    assert missing_makers({t.name for t in tables}) == set(), "add a maker to tests/security/tenant_rows.py"
    for tenant in tenants:
        empty = [
            t.name
            for t in tables
            if _count(db, sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(_t(t.name), _t(t.key)), [tenant.id])
            == 0
        ]
        assert empty == []


def test_the_app_sees_and_changes_only_its_own_tenant_in_every_table(
    db: Conn, connect: Connect, role_settings: RoleSettings, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    app_privileges = catalog.privileges(db, role_settings.postgres_user)
    partitioned = _partitioned(db)
    problems: list[str] = []
    checked = 0
    with connect("app") as conn, tenant_transaction(conn, a.id):
        for table in catalog.tenant_tables(db):
            granted = app_privileges.get(table.name, {})
            checked += _check_table(db, conn, table, granted, _scope(table, partitioned, a, b), a, b, problems)
    assert problems == []
    assert checked >= 40  # reads and writes actually attempted, not skipped


def _readable(granted: dict[str, frozenset[str] | None], privilege: str, column: str) -> bool:
    if privilege not in granted:
        return False
    cols = granted[privilege]
    return cols is None or column in cols


def _check_table(
    db: Conn,
    conn: Conn,
    table: catalog.TenantTable,
    granted: dict[str, frozenset[str] | None],
    scope: tuple[sql.Composed, list[Any]],
    a: Tenant,
    b: Tenant,
    problems: list[str],
) -> int:
    name, key = _t(table.name), _t(table.key)
    where, params = scope
    checks = 0
    if _readable(granted, "SELECT", table.key):
        # Exactly A's rows: as many as the owner counts for A (shared catalogues' NULL rows aside), none of B's.
        own = _count(
            db, sql.SQL("SELECT count(*) FROM {} WHERE {} AND {} = %s").format(name, where, key), [*params, a.id]
        )
        seen = _count(
            conn, sql.SQL("SELECT count(*) FROM {} WHERE {} AND {} IS NOT NULL").format(name, where, key), params
        )
        foreign = _count(
            conn, sql.SQL("SELECT count(*) FROM {} WHERE {} AND {} = %s").format(name, where, key), [*params, b.id]
        )
        if own == 0 or seen != own or foreign != 0:
            problems.append(f"{table.name}: app in A sees {seen} rows (A has {own}), {foreign} of B")
        checks += 1
    elif "SELECT" in granted:
        problems.append(f"{table.name}: the app may read some columns but not {table.key}: cannot verify")

    if "DELETE" in granted:
        with conn.transaction():
            deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(name, key), [b.id]).rowcount
        if deleted != 0:
            problems.append(f"{table.name}: app in A deleted {deleted} rows of B")
        checks += 1

    updatable = [
        c.name
        for c in catalog.columns(db, table.name)
        if _readable(granted, "UPDATE", c.name) and _readable(granted, "SELECT", c.name)
    ]
    if updatable and _readable(granted, "SELECT", table.key):
        column = _t(updatable[0])
        with conn.transaction():
            changed = conn.execute(
                sql.SQL("UPDATE {} SET {} = {} WHERE {} = %s").format(name, column, column, key), [b.id]
            ).rowcount
        if changed != 0:
            problems.append(f"{table.name}: app in A updated {changed} rows of B")
        checks += 1
    if _readable(granted, "UPDATE", table.key) and _readable(granted, "SELECT", table.key):
        try:
            with conn.transaction():
                moved = conn.execute(
                    sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(name, key, key), [b.id, a.id]
                ).rowcount
            problems.append(f"{table.name}: app in A moved {moved} of its rows to B")
        except psycopg.errors.InsufficientPrivilege as exc:
            if "row-level security" not in str(exc):
                problems.append(f"{table.name}: moving a row to B refused, but not by row security: {exc}")
        except psycopg.IntegrityError:
            pass  # an immutability trigger or a key refused it before row security had to
        checks += 1

    if "INSERT" in granted:
        checks += _check_insert_into_b(db, conn, table, granted, b, problems)
    return checks


def _check_insert_into_b(
    db: Conn,
    conn: Conn,
    table: catalog.TenantTable,
    granted: dict[str, frozenset[str] | None],
    b: Tenant,
    problems: list[str],
) -> int:
    """A copy of one of B's rows (with a fresh id) written by the app in tenant A must be refused."""
    row = db.execute(
        sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE {} = %s LIMIT 1").format(_t(table.name), _t(table.key)), [b.id]
    ).fetchone()
    assert row is not None
    image = dict(row[0])
    if "id" in image and table.key != "id":
        image["id"] = str(uuid4())
    cols = [c.name for c in catalog.columns(db, table.name) if not c.generated]
    fully_granted = all(_readable(granted, "INSERT", c) for c in cols)
    query = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM jsonb_populate_record(NULL::{}, %s)").format(
        _t(table.name),
        sql.SQL(", ").join(map(_t, cols)),
        sql.SQL(", ").join(map(_t, cols)),
        _t(table.name),
    )
    try:
        with conn.transaction():
            conn.execute(query, [Jsonb(image)])
        problems.append(f"{table.name}: app in A inserted a row into B")
    except psycopg.errors.InsufficientPrivilege as exc:
        if fully_granted and "row-level security" not in str(exc):
            problems.append(f"{table.name}: insert into B refused, but not by row security: {exc}")
    except psycopg.IntegrityError as exc:
        problems.append(f"{table.name}: insert into B reached a constraint before row security: {exc}")
    return 1


def _visible_tenants(conn: Conn, tables: list[catalog.TenantTable], a: Tenant, b: Tenant) -> dict[str, set[UUID]]:
    seen: dict[str, set[UUID]] = {}
    for table in tables:
        rows = conn.execute(
            sql.SQL("SELECT DISTINCT {} FROM {} WHERE {} = ANY(%s)").format(
                _t(table.key), _t(table.name), _t(table.key)
            ),
            [[a.id, b.id]],
        ).fetchall()
        if rows:
            seen[table.name] = {r[0] for r in rows}
    return seen


def test_the_tenant_ends_with_its_transaction_on_a_reused_connection(
    db: Conn, connect: Connect, role_settings: RoleSettings, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    app_privileges = catalog.privileges(db, role_settings.postgres_user)
    tables = [t for t in catalog.tenant_tables(db) if _readable(app_privileges.get(t.name, {}), "SELECT", t.key)]
    assert len(tables) >= 20
    names = {t.name for t in tables}

    with connect("app") as conn:
        with tenant_transaction(conn, a.id, commit=True):
            assert _visible_tenants(conn, tables, a, b) == {name: {a.id} for name in names}
        with tenant_transaction(conn, None):
            assert _visible_tenants(conn, tables, a, b) == {}
        with tenant_transaction(conn, b.id):
            assert _visible_tenants(conn, tables, a, b) == {name: {b.id} for name in names}
        assert _visible_tenants(conn, tables, a, b) == {}

        # A statement outside a transaction block is its own transaction: the setting dies with it.
        conn.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(a.id),))
        assert _visible_tenants(conn, tables, a, b) == {}

        # A failed transaction leaves nothing behind either.
        with pytest.raises(psycopg.errors.DivisionByZero), tenant_transaction(conn, a.id, commit=True):
            conn.execute("SELECT 1 / 0")
        assert _visible_tenants(conn, tables, a, b) == {}


def test_without_a_tenant_the_app_writes_nothing(connect: Connect, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    with connect("app") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(
                "INSERT INTO symptoms (organization_id, patient_id, code, name, severity, source, onset_at)"
                " VALUES (%s, %s, 'cough', 'Cough', 'mild', 'patient', now())",
                (a.id, a.patient.id),
            )
        assert conn.execute("UPDATE patients SET timezone = 'UTC' WHERE id = %s", (a.patient.id,)).rowcount == 0
        assert conn.execute("DELETE FROM user_devices WHERE organization_id = %s", (a.id,)).rowcount == 0


def test_a_malformed_tenant_is_an_error_not_a_leak(connect: Connect, tenants: tuple[Tenant, Tenant]) -> None:
    with (
        connect("app") as conn,
        pytest.raises(psycopg.errors.InvalidTextRepresentation),
        conn.transaction(),
    ):
        conn.execute("SELECT set_config('rpm.organization_id', 'x'' OR true --', true)")
        conn.execute("SELECT count(*) FROM patients")


def test_views_show_the_app_only_its_tenant(
    db: Conn, connect: Connect, role_settings: RoleSettings, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    app_privileges = catalog.privileges(db, role_settings.postgres_user)
    views = [v for v in catalog.tenant_views(db) if _readable(app_privileges.get(v, {}), "SELECT", "organization_id")]
    leaks = []
    with connect("app") as conn:
        for view in views:
            count = sql.SQL("SELECT count(*) FROM {} WHERE organization_id = ANY(%s)").format(_t(view))
            with tenant_transaction(conn, a.id):
                in_a = _count(conn, count, [[b.id]])
            with tenant_transaction(conn, None):
                unset = _count(conn, count, [[a.id, b.id]])
            if in_a or unset:
                leaks.append(f"{view}: {in_a} rows of B in tenant A, {unset} rows without a tenant")
    assert leaks == []
    assert len(views) >= 1 or not catalog.tenant_views(db)


def test_views_the_app_reads_run_with_its_own_rights(db: Conn, role_settings: RoleSettings) -> None:
    rows = db.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v'"
        " AND has_table_privilege(%s, c.oid, 'SELECT')"
        " AND NOT coalesce('security_invoker=true' = ANY(c.reloptions), false)",
        (role_settings.postgres_user,),
    ).fetchall()
    assert rows == []


def test_the_only_owner_rights_functions_the_app_may_call_are_reviewed(db: Conn, role_settings: RoleSettings) -> None:
    rows = db.execute(
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef"
        " AND p.prorettype <> 'trigger'::regtype AND has_function_privilege(%s, p.oid, 'EXECUTE')",
        (role_settings.postgres_user,),
    ).fetchall()
    assert {str(r[0]) for r in rows} == APP_DEFINER_FUNCTIONS


def test_no_role_but_the_owner_touches_a_partition_directly(db: Conn, role_settings: RoleSettings) -> None:
    roles = (role_settings.postgres_user, role_settings.postgres_ingest_user, role_settings.postgres_processor_user)
    names = catalog.partitions(db)
    assert names
    granted = db.execute(
        "SELECT r, c FROM unnest(%s::text[]) AS r, unnest(%s::text[]) AS c"
        " WHERE has_any_column_privilege(r, ('public.' || quote_ident(c))::regclass, 'SELECT, INSERT, UPDATE')"
        "    OR has_table_privilege(r, ('public.' || quote_ident(c))::regclass, 'DELETE, TRUNCATE')",
        (list(roles), names),
    ).fetchall()
    assert granted == []


def test_log_in_finds_a_user_of_any_tenant_and_nothing_more(
    db: Conn, connect: Connect, tenants: tuple[Tenant, Tenant]
) -> None:
    _, b = tenants
    email = db.execute("SELECT email FROM users WHERE id = %s", (b.provider.user_id,)).fetchone()
    assert email is not None
    with connect("app") as conn:
        found = conn.execute("SELECT * FROM user_login_lookup(%s)", (email[0].upper(),)).fetchone()
        assert found == (b.provider.user_id, b.id)
        assert conn.execute("SELECT * FROM user_login_lookup('nobody@example.test')").fetchone() == (None, None)
        # The lookup's scope is honoured only inside owner-rights code: setting it buys the app nothing.
        with conn.transaction():
            conn.execute("SELECT set_config('rpm.scope', 'login', true)")
            assert conn.execute("SELECT count(*) FROM users WHERE id = %s", (b.provider.user_id,)).fetchone() == (0,)
            assert conn.execute("SELECT current_setting('rpm.scope')").fetchone() == ("login",)
            conn.execute("SELECT * FROM user_login_lookup(%s)", (email[0],))
            assert conn.execute("SELECT current_setting('rpm.scope')").fetchone() == ("login",)
