"""Benchmark: ways to write readings idempotently into `vital_readings` (COPY has no ON CONFLICT).

Measures, in one run on this machine, rows/s for the same batches of rows:
  raw_copy         COPY into an unindexed, logged copy of the table (the ceiling; no dedupe, owner's scratch table)
  direct_copy      COPY straight into vital_readings (fast, not idempotent: any duplicate aborts the batch)
  staging_merge    COPY into a session temp table, INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING id
                   (what ingest/writer.py does)
  staging_merge_count  the same without RETURNING: the command tag counts new rows; only if some were not, a join
                   finds the pre-existing ones (faster without repeats; with repeats the join's plan over a temp
                   table without statistics was seen to collapse)
  unnest_insert    INSERT ... SELECT FROM unnest($1::uuid[], ...) ON CONFLICT DO NOTHING RETURNING
  executemany      executemany(INSERT ... ON CONFLICT DO NOTHING) (per-row statements, for reference)
each with synchronous_commit on, one transaction per batch, under the ingest role (raw_copy as the owner), and
the idempotent ones again with 10 % of each batch repeating already-stored identities.

Usage: .venv/bin/python scripts/bench/ingest_write.py [--batches 30] [--batch-size 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ingest.settings import IngestSettings
from ingest.writer import COLUMNS

Row = tuple[Any, ...]


async def _jsonb_codec(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda t: b"\x01" + t.encode(),
        decoder=lambda d: d[1:].decode(),
        schema="pg_catalog",
        format="binary",
    )


def make_rows(n: int, devices: Sequence[uuid.UUID], org: uuid.UUID, start: datetime) -> list[Row]:
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        value = float(60 + i % 40)
        rows.append(
            (
                uuid.uuid4(),
                org,
                org,
                random.choice(devices),
                1 + i % 8,
                value,
                value,
                "/min",
                start + timedelta(microseconds=i * 997 + random.randrange(997)),
                now,
                f"bench-{i}",
                json.dumps({"meta": {"seq": i}}),
            )
        )
    return rows


async def raw_copy(conn: asyncpg.Connection, rows: list[Row]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("bench_raw_readings", records=rows, columns=COLUMNS)


async def direct_copy(conn: asyncpg.Connection, rows: list[Row]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("vital_readings", records=rows, columns=COLUMNS)


async def staging_merge(conn: asyncpg.Connection, rows: list[Row]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("bench_staging", records=rows, columns=COLUMNS)
        await conn.fetch(
            f"INSERT INTO vital_readings ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM bench_staging"
            " ON CONFLICT DO NOTHING RETURNING id"
        )


async def staging_merge_count(conn: asyncpg.Connection, rows: list[Row]) -> None:
    """The merge without RETURNING: the command tag says how many were new; only when some were not does one
    more query find the pre-existing rows (their id differs from the staged one)."""
    async with conn.transaction():
        await conn.copy_records_to_table("bench_staging", records=rows, columns=COLUMNS)
        tag = await conn.execute(
            f"INSERT INTO vital_readings ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM bench_staging"
            " ON CONFLICT DO NOTHING"
        )
        if int(tag.split()[-1]) != len(rows):
            await conn.fetch(
                "SELECT s.id, v.value FROM bench_staging s JOIN vital_readings v"
                " USING (device_id, vital_type_id, measured_at) WHERE v.id <> s.id"
            )


UNNEST = (
    f"INSERT INTO vital_readings ({', '.join(COLUMNS)}) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[],"
    " $4::uuid[], $5::smallint[], $6::float8[], $7::float8[], $8::text[], $9::timestamptz[], $10::timestamptz[],"
    " $11::text[], $12::jsonb[]) ON CONFLICT DO NOTHING RETURNING id"
)


async def unnest_insert(conn: asyncpg.Connection, rows: list[Row]) -> None:
    columns = [list(c) for c in zip(*rows, strict=True)]
    async with conn.transaction():
        await conn.fetch(UNNEST, *columns)


async def executemany(conn: asyncpg.Connection, rows: list[Row]) -> None:
    async with conn.transaction():
        await conn.executemany(
            f"INSERT INTO vital_readings ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i}' for i in range(1, 13))})"
            " ON CONFLICT DO NOTHING",
            rows,
        )


Method = Callable[[asyncpg.Connection, list[Row]], Awaitable[None]]


async def measure(conn: asyncpg.Connection, method: Method, batches: list[list[Row]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        await method(conn, batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    s = IngestSettings()
    common = {"host": s.postgres_host, "port": s.postgres_port, "database": s.postgres_db}
    ingest = await asyncpg.connect(
        user=s.postgres_ingest_user, password=s.postgres_ingest_password.get_secret_value(), **common
    )
    owner = await asyncpg.connect(
        user=s.postgres_admin_user, password=s.postgres_admin_password.get_secret_value(), **common
    )
    await _jsonb_codec(ingest)
    await _jsonb_codec(owner)
    await owner.execute(
        "DROP TABLE IF EXISTS bench_raw_readings;"
        " CREATE TABLE bench_raw_readings (LIKE vital_readings INCLUDING DEFAULTS)"
    )
    await ingest.execute(
        "CREATE TEMP TABLE bench_staging (LIKE vital_readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    await ingest.fetchval("SELECT ensure_vital_reading_partitions()")
    org = uuid.uuid4()
    devices = [uuid.uuid4() for _ in range(5000)]
    start = datetime.now(UTC) - timedelta(hours=3)
    n = args.batch_size
    results: dict[str, float] = {}
    try:
        methods: list[tuple[str, Method, asyncpg.Connection]] = [
            ("raw_copy", raw_copy, owner),
            ("direct_copy", direct_copy, ingest),
            ("staging_merge", staging_merge, ingest),
            ("staging_merge_count", staging_merge_count, ingest),
            ("unnest_insert", unnest_insert, ingest),
            ("executemany", executemany, ingest),
        ]
        for offset, (name, method, conn) in enumerate(methods):
            count = args.batches
            batches = [
                make_rows(n, devices, org, start + timedelta(seconds=offset * 100_000 + b * 97)) for b in range(count)
            ]
            try:
                results[name] = await measure(conn, method, batches)
            except asyncpg.FeatureNotSupportedError as exc:  # COPY into a table under row-level security
                print(f"{name:28s} {'refused':>10s} ({exc})", flush=True)
                continue
            print(f"{name:28s} {results[name]:>10,.0f} rows/s", flush=True)
        repeats = [
            ("staging_merge", staging_merge),
            ("staging_merge_count", staging_merge_count),
            ("unnest_insert", unnest_insert),
        ]
        for offset, (name, method) in enumerate(repeats):
            batches = []
            for b in range(args.batches):
                rows = make_rows(n, devices, org, start + timedelta(seconds=(10 + offset) * 100_000 + b * 97))
                await method(ingest, rows[: n // 10])  # store 10 %, then send the whole batch
                batches.append(rows)
            rate = await measure(ingest, method, batches)
            print(f"{name + ' (10% repeats)':28s} {rate:>10,.0f} rows/s", flush=True)
    finally:
        await owner.execute("DROP TABLE IF EXISTS bench_raw_readings")
        deleted = await owner.execute("DELETE FROM vital_readings WHERE organization_id = $1", org)
        print(f"cleanup: {deleted}")
        await ingest.close()
        await owner.close()


if __name__ == "__main__":
    asyncio.run(main())
