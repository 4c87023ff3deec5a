"""Benchmark: what row-level security costs, in a throw-away database (fresh migrations, dropped at the end).

  ingest merge    ingest's write path (COPY into a session staging table, INSERT ... SELECT ... ON CONFLICT DO
                  NOTHING RETURNING id into vital_readings) with RLS on, as deployed, and with RLS disabled on
                  vital_readings; rounds alternate so drift hits both alike.
  app reads       the clinician's query (one patient's recent readings of one type) as the app role in its tenant
                  (RLS) against the same query as the owner (its policy folds away); mean latency.
  name search     search_patients() as the app against the owner, both in the tenant's transaction (since 0420
                  an owner-rights probe of GIN indexes either way; before/after: scripts/bench/patient_search.py).

Usage: .venv/bin/python -m scripts.bench.tenant_isolation [--rounds 6] [--batches 10] [--batch-size 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
from psycopg import sql

from ingest.writer import COLUMNS
from migrations.runner import migrate
from migrations.settings import MigrationSettings
from scripts.database import DatabaseSettings as RoleSettings
from scripts.database import Role

Row = tuple[Any, ...]
MERGE = (
    f"INSERT INTO vital_readings ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM bench_staging"
    " ON CONFLICT DO NOTHING RETURNING id"
)


def _rows(n: int, org: uuid.UUID, patients: list[uuid.UUID], start: datetime) -> list[Row]:
    now = datetime.now(UTC)
    return [
        (
            uuid.uuid4(),
            org,
            patients[i % len(patients)],
            patients[i % len(patients)],
            1 + i % 8,
            float(60 + i % 40),
            float(60 + i % 40),
            "/min",
            start + timedelta(microseconds=i * 997),
            now,
            f"bench-{i}",
            json.dumps({"meta": {"seq": i}}),
        )
        for i in range(n)
    ]


async def _connect(roles: RoleSettings, role: Role, database: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(roles.url(role).rsplit("/", 1)[0] + "/" + database)
    await conn.set_type_codec(
        "jsonb", encoder=lambda t: b"\x01" + t.encode(), decoder=lambda d: d[1:].decode(), schema="pg_catalog",
        format="binary",
    )  # fmt: skip
    return conn


async def _merge_rate(conn: asyncpg.Connection, batches: list[list[Row]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        async with conn.transaction():
            await conn.copy_records_to_table("bench_staging", records=batch, columns=COLUMNS)
            await conn.fetch(MERGE)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


async def _latency(run: Callable[[int], Awaitable[object]], n: int) -> float:
    """Mean milliseconds per call."""
    started = time.perf_counter()
    for i in range(n):
        await run(i)
    return (time.perf_counter() - started) * 1000 / n


async def bench(database: str, rounds: int, batches: int, batch_size: int) -> dict[str, float]:
    roles = RoleSettings()
    owner = await _connect(roles, "owner", database)
    ingest = await _connect(roles, "ingest", database)
    app = await _connect(roles, "app", database)
    results: dict[str, float] = {}
    try:
        await ingest.fetchval("SELECT ensure_vital_reading_partitions()")
        await ingest.execute(
            "CREATE TEMP TABLE bench_staging (LIKE vital_readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        org, other = uuid.uuid4(), uuid.uuid4()
        for o in (org, other):
            await owner.execute(
                "INSERT INTO organizations (id, name, slug) VALUES ($1, 'Bench', $2)",
                o,
                f"bench-{secrets.token_hex(4)}",
            )
        fake_patients = [uuid.uuid4() for _ in range(500)]
        start = datetime.now(UTC) - timedelta(hours=6)
        on: list[float] = []
        off: list[float] = []
        for r in range(rounds):
            for enabled, sink in ((True, on), (False, off)):
                await owner.execute(
                    f"ALTER TABLE vital_readings {'ENABLE' if enabled else 'DISABLE'} ROW LEVEL SECURITY"
                )
                offset = (2 * r + (0 if enabled else 1)) * batches
                data = [
                    _rows(batch_size, org, fake_patients, start + timedelta(seconds=(offset + b) * 3))
                    for b in range(batches)
                ]
                sink.append(await _merge_rate(ingest, data))
        await owner.execute("ALTER TABLE vital_readings ENABLE ROW LEVEL SECURITY")
        results["ingest merge, RLS on (rows/s)"] = statistics.median(on)
        results["ingest merge, RLS off (rows/s)"] = statistics.median(off)

        # Clinicians' reads: 200 patients x 8 types x 60 readings in each of two tenants.
        for o in (org, other):
            await owner.execute(
                "WITH u AS (INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
                " SELECT $1, 'b' || i || '-' || $2 || '@example.test', 'x', 'patient', 'First' || i, 'Last' || i"
                " FROM generate_series(1, 5000) AS i RETURNING id)"
                " INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
                " SELECT $1, id, 'm-' || row_number() OVER (), '1950-01-01', 'UTC' FROM u",
                o,
                secrets.token_hex(4),
            )
            await owner.execute(
                "INSERT INTO vital_readings (id, organization_id, patient_id, device_id, vital_type_id, value,"
                " original_value, original_unit, measured_at, received_at, message_id)"
                " SELECT gen_random_uuid(), p.organization_id, p.id, p.id, t, 70, 70, '/min',"
                "        now() - make_interval(mins => k * 10 + t), now(), 'm'"
                "   FROM (SELECT * FROM patients WHERE organization_id = $1 LIMIT 200) p,"
                "        generate_series(1, 8) t, generate_series(1, 60) k",
                o,
            )
        await owner.execute("ANALYZE")
        patients = [
            r[0] for r in await owner.fetch("SELECT id FROM patients WHERE organization_id = $1 LIMIT 200", org)
        ]
        query = (
            "SELECT value, measured_at FROM vital_readings WHERE patient_id = $1 AND vital_type_id = 1"
            " ORDER BY measured_at DESC LIMIT 50"
        )

        async def as_app(i: int) -> object:
            async with app.transaction():
                await app.execute(f"SET LOCAL rpm.organization_id = '{org}'")
                return await app.fetch(query, patients[i % len(patients)])

        async def as_owner(i: int) -> object:
            async with owner.transaction():
                return await owner.fetch(query, patients[i % len(patients)])

        for _ in range(2):
            results["patient readings, app + RLS (ms)"] = await _latency(as_app, 2000)
            results["patient readings, owner (ms)"] = await _latency(as_owner, 2000)

        async def search_app(_: int) -> object:
            async with app.transaction():
                await app.execute(f"SET LOCAL rpm.organization_id = '{org}'")
                return await app.fetch("SELECT * FROM search_patients($1, 'last4242 first42')", org)

        async def search_owner(_: int) -> object:
            async with owner.transaction():  # since 0420 the search answers only for the transaction's tenant
                await owner.execute(f"SET LOCAL rpm.organization_id = '{org}'")
                return await owner.fetch("SELECT * FROM search_patients($1, 'last4242 first42')", org)

        results["name search, app + RLS (ms)"] = await _latency(search_app, 100)
        results["name search, owner (ms)"] = await _latency(search_owner, 100)
    finally:
        for conn in (ingest, app, owner):
            await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    settings = MigrationSettings()
    database = f"rpm_bench_rls_{secrets.token_hex(4)}"
    with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        migrate(settings.admin_dsn(database), settings.roles())
        results = asyncio.run(bench(database, args.rounds, args.batches, args.batch_size))
    finally:
        with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    for name, value in results.items():
        print(f"{name:36s} {value:>12,.2f}")
    on, off = results["ingest merge, RLS on (rows/s)"], results["ingest merge, RLS off (rows/s)"]
    print(f"{'ingest merge cost of RLS':36s} {100 * (off - on) / off:>11.1f}%")


if __name__ == "__main__":
    main()
