"""search_patients() runs with the owner's rights (migration 0420) so that its GIN indexes work under row-level
security; these tests hold it to exactly what row security returns the app, and check the indexes are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import pytest

from migrations.settings import MigrationSettings
from scripts.bench.patient_search import UNDER_RLS  # the function's body before 0420, with the app's rights
from tests import factories
from tests.security.conftest import Connect
from tests.security.tenant import tenant_transaction

Conn = psycopg.Connection[Any]
SEARCH = "SELECT * FROM search_patients(%(org)s, %(q)s, %(n)s)"
QUERIES = ("zbysz wil", "wilhelmina zbyshewski", "wil", "smith", "smyth william", "nobody-like-this", "")
SEARCH_INDEXES = ("user_name_index_search_idx", "user_name_index_trgm_idx")


@dataclass(frozen=True, slots=True)
class Clinic:
    organization_id: UUID
    patient_ids: frozenset[UUID]


def _clinic(db: Conn, names: list[tuple[str, str]], *, deleted: int | None = None) -> Clinic:
    org = factories.create_organization(db)
    ids = []
    for i, (first, last) in enumerate(names):
        patient = factories.create_patient(db, org.id)
        db.execute("UPDATE users SET first_name = %s, last_name = %s WHERE id = %s", (first, last, patient.user_id))
        if i == deleted:
            db.execute("UPDATE patients SET deleted_at = now() WHERE id = %s", (patient.id,))
        ids.append(patient.id)
    return Clinic(org.id, frozenset(ids))


@pytest.fixture(scope="module")
def clinics(migration_settings: MigrationSettings) -> tuple[Clinic, Clinic]:
    """Two tenants with overlapping names (the same person's name in both), one soft-deleted patient in A."""
    with psycopg.connect(migration_settings.admin_dsn(), autocommit=True) as db:
        a = _clinic(
            db,
            [("Wilhelmina", "Zbyszewski"), ("William", "Smith"), ("Willa", "Smyth"), ("William", "Smithson")],
            deleted=3,
        )
        b = _clinic(db, [("Wilhelmina", "Zbyszewski"), ("William", "Smithers"), ("Wilbur", "Smith")])
    return a, b


def _ids(rows: list[tuple[Any, ...]]) -> set[UUID]:
    return {row[0] for row in rows}


def test_the_function_returns_exactly_what_row_security_returns(
    connect: Connect, clinics: tuple[Clinic, Clinic]
) -> None:
    found = 0
    with connect("app") as conn:
        for clinic in clinics:
            for query in QUERIES:
                for limit in (20, 2):
                    params = {"org": clinic.organization_id, "q": query, "n": limit}
                    with tenant_transaction(conn, clinic.organization_id):
                        through_function = conn.execute(SEARCH, params).fetchall()
                        under_rls = conn.execute(UNDER_RLS, params).fetchall()
                    assert through_function == under_rls, (query, limit)
                    assert _ids(through_function) <= clinic.patient_ids
                    found += len(through_function)
    assert found >= 10  # the queries do find people: equality of two empty lists would prove nothing


def test_a_tenant_never_sees_another_tenants_patients_also_on_a_reused_connection(
    connect: Connect, clinics: tuple[Clinic, Clinic]
) -> None:
    a, b = clinics
    with connect("app") as conn:
        for me, other in ((a, b), (b, a), (a, b)):
            with tenant_transaction(conn, me.organization_id, commit=True):
                mine = conn.execute(SEARCH, {"org": me.organization_id, "q": "wilhelmina zbyszewski", "n": 50})
                assert _ids(mine.fetchall()) <= me.patient_ids
                assert len(_ids(conn.execute(SEARCH, {"org": me.organization_id, "q": "wil", "n": 50}).fetchall())) >= 2
                # Naming the other tenant, or widening the log-in scope (honoured only in owner-rights code): nothing.
                assert conn.execute(SEARCH, {"org": other.organization_id, "q": "wil", "n": 50}).fetchall() == []
                conn.execute("SELECT set_config('rpm.scope', 'login', true)")
                widened = conn.execute(SEARCH, {"org": me.organization_id, "q": "wil", "n": 50}).fetchall()
                assert _ids(widened) <= me.patient_ids
            # The next use of the connection carries no tenant.
            assert conn.execute(SEARCH, {"org": me.organization_id, "q": "wil", "n": 50}).fetchall() == []


def test_without_a_tenant_the_search_returns_nothing(connect: Connect, clinics: tuple[Clinic, Clinic]) -> None:
    a, _ = clinics
    params = {"org": a.organization_id, "q": "wil", "n": 50}
    with connect("app") as conn:
        assert conn.execute(SEARCH, params).fetchall() == []
        with tenant_transaction(conn, None):
            assert conn.execute(SEARCH, params).fetchall() == []
            assert conn.execute(SEARCH, {**params, "org": None}).fetchall() == []
        with tenant_transaction(conn, a.organization_id):
            assert conn.execute(SEARCH, {**params, "org": None}).fetchall() == []
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM user_name_index")


def test_the_app_reaches_the_name_indexes_at_a_size_where_they_matter(
    connect: Connect, clinics: tuple[Clinic, Clinic]
) -> None:
    a, _ = clinics
    with connect("app") as conn, tenant_transaction(conn, a.organization_id):
        # 5,000 more patients in A (rolled back): before 0420 the search filtered all of them.
        conn.execute(
            "WITH u AS (INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
            " SELECT %(org)s, 'crowd' || i || '-' || %(org)s || '@example.test', 'x', 'patient',"
            " initcap(translate(substr(md5('f' || i), 1, 8), '0123456789', 'ghijklmnop')),"
            " initcap(translate(substr(md5('l' || i), 1, 10), '0123456789', 'qrstuvwxyz'))"
            " FROM generate_series(1, 5000) AS i RETURNING id)"
            " INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
            " SELECT %(org)s, id, 'crowd-' || id, '1950-01-01', 'UTC' FROM u",
            {"org": a.organization_id},
        )
        before = _scans(conn)
        rows = conn.execute(SEARCH, {"org": a.organization_id, "q": "zbysz wil", "n": 20}).fetchall()
        after = _scans(conn)
        under_rls = conn.execute(UNDER_RLS, {"org": a.organization_id, "q": "zbysz wil", "n": 20}).fetchall()
    assert rows == under_rls and len(rows) == 1
    assert all(after[index] > before[index] for index in SEARCH_INDEXES), (before, after)


def test_the_candidate_probe_is_planned_on_both_gin_indexes(migration_settings: MigrationSettings) -> None:
    with psycopg.connect(migration_settings.admin_dsn()) as db:  # one transaction, rolled back: no rows, no stats
        db.execute(
            "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
            " SELECT o.id, 'probe' || i || '-' || o.id || '@example.test', 'x', 'patient',"
            " translate(substr(md5('f' || i), 1, 8), '0123456789', 'ghijklmnop'),"
            " translate(substr(md5('l' || i), 1, 10), '0123456789', 'qrstuvwxyz')"
            " FROM generate_series(1, 5000) AS i, (SELECT id FROM organizations LIMIT 1) AS o"
        )
        db.execute("ANALYZE user_name_index")
        rows = db.execute("EXPLAIN SELECT * FROM name_candidates(%s)", ("zbysz wil",)).fetchall()
        db.rollback()
    plan = "\n".join(str(r[0]) for r in rows)
    for index in SEARCH_INDEXES:
        assert f"Bitmap Index Scan on {index}" in plan, plan


def _scans(conn: Conn) -> dict[str, int]:
    """Index scans counted in this backend's current transaction (the function runs in it)."""
    rows = conn.execute(
        "SELECT name, pg_stat_get_xact_numscans(to_regclass(name)) FROM unnest(%s::text[]) AS name",
        (list(SEARCH_INDEXES),),
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}
