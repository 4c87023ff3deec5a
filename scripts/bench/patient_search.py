"""Benchmark: patient name search as the app role under row-level security, before and after migration 0420.

In a throw-away database (fresh migrations, dropped at the end): `--tenants` organizations of `--patients` patients
each, with made-up random names, vacuumed and analysed. As the app in one tenant's transaction, per query:

  row security   the pre-0420 search body run with the app's rights (the GIN indexes cannot serve non-leakproof
                 @@ / % under the policy's security barrier: the tenant's users are filtered one by one)
  function       search_patients() (0420: owner-rights probe of the name projection's GIN indexes)

Both return the same rows (checked on every query). Prints the medians in ms (round trip included) and the plan.

Usage: .venv/bin/python -m scripts.bench.patient_search [--tenants 4] [--patients 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from migrations.runner import migrate
from migrations.settings import MigrationSettings
from scripts.database import DatabaseSettings

UNDER_RLS = (
    "SELECT p.id, u.id, p.mrn, u.first_name, u.last_name,"
    "       greatest(ts_rank(u.name_search, name_tsquery(%(q)s)),"
    "                similarity(full_name(u.first_name, u.last_name), lower(%(q)s))) AS score"
    "  FROM users u JOIN patients p ON p.user_id = u.id"
    " WHERE p.organization_id = %(org)s AND p.deleted_at IS NULL AND u.deleted_at IS NULL"
    "   AND (u.name_search @@ name_tsquery(%(q)s) OR full_name(u.first_name, u.last_name) %% lower(%(q)s))"
    " ORDER BY score DESC, u.last_name, u.first_name LIMIT %(n)s"
)
"""The search body before 0420, run with the app's own rights (also what tests/security/test_patient_search.py
holds the function to)."""
FUNCTION = "SELECT * FROM search_patients(%(org)s, %(q)s, %(n)s)"
LIMIT = 20


def _params(org: UUID, q: str) -> dict[str, Any]:
    return {"org": org, "q": q, "n": LIMIT}


def _populate(owner: psycopg.Connection[Any], tenants: int, patients: int) -> dict[UUID, list[str]]:
    queries: dict[UUID, list[str]] = {}
    for k in range(tenants):
        slug = f"bench-search-{k}"
        row = owner.execute("INSERT INTO organizations (name, slug) VALUES (%s, %s) RETURNING id", (slug, slug))
        org = row.fetchone()
        assert org is not None
        owner.execute(
            "WITH u AS (INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
            " SELECT %(org)s, 'b' || %(k)s || '-' || g || '@example.test', 'x', 'patient',"
            " initcap(translate(substr(md5(g || 'f' || %(k)s), 1, 7), '0123456789', 'ghijklmnop')),"
            " initcap(translate(substr(md5(g || 'l' || %(k)s), 1, 9), '0123456789', 'qrstuvwxyz'))"
            " FROM generate_series(1, %(n)s) g RETURNING id)"
            " INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
            " SELECT %(org)s, id, 'm-' || id, '1950-01-01', 'UTC' FROM u",
            {"org": org[0], "k": k, "n": patients},
        )
        names = owner.execute(
            "SELECT first_name, last_name FROM users WHERE organization_id = %s ORDER BY id LIMIT 5 OFFSET 777",
            (org[0],),
        ).fetchall()
        # A prefix of both names, a whole last name, and a typo (trigram only).
        queries[org[0]] = [q for f, last in names for q in (f"{f[:4]} {last[:5]}", last, f"{f} {last[:-1]}x")]
    owner.execute("VACUUM ANALYZE users, patients, user_name_index")
    return queries


def _median_ms(app: psycopg.Connection[Any], statement: str, queries: dict[UUID, list[str]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        for org, words in queries.items():
            for q in words:
                with app.transaction():
                    app.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(org),))
                    started = time.perf_counter()
                    app.execute(statement, _params(org, q)).fetchall()
                    times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _plans(app: psycopg.Connection[Any], org: UUID, q: str) -> str:
    with app.transaction():
        app.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(org),))
        rows = app.execute("EXPLAIN (ANALYZE, COSTS OFF) " + UNDER_RLS, _params(org, q)).fetchall()
    return "\n".join(str(r[0]) for r in rows)


def bench(settings: MigrationSettings, app_dsn: str, database: str, tenants: int, patients: int, rounds: int) -> None:
    with psycopg.connect(settings.admin_dsn(database), autocommit=True) as owner:
        queries = _populate(owner, tenants, patients)
    with psycopg.connect(app_dsn) as app:
        for org, words in queries.items():
            for q in words:
                with app.transaction():
                    app.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(org),))
                    same = app.execute(FUNCTION, _params(org, q)).fetchall()
                    assert same == app.execute(UNDER_RLS, _params(org, q)).fetchall() and same, q
        print(f"{tenants} tenants x {patients} patients, {sum(map(len, queries.values()))} queries x {rounds}")
        for _ in range(2):  # alternate, so drift on a shared machine hits both alike
            print(f"  row security (pre-0420 body)  median {_median_ms(app, UNDER_RLS, queries, rounds):7.2f} ms")
            print(f"  search_patients() (0420)      median {_median_ms(app, FUNCTION, queries, rounds):7.2f} ms")
        first = next(iter(queries))
        print("plan under row security:\n" + _plans(app, first, queries[first][0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = DatabaseSettings()
    database = f"rpm_bench_search_{secrets.token_hex(4)}"
    with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        migrate(settings.admin_dsn(database), settings.roles())
        app_dsn = settings.dsn("app", database)
        bench(settings, app_dsn, database, args.tenants, args.patients, args.rounds)
    finally:
        with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


if __name__ == "__main__":
    main()
