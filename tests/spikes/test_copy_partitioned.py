"""Spike: the ingest role binary-COPYs readings into the day-partitioned vital_readings through asyncpg.

Row-level security applies to the ingest role on vital_readings (migration 0400), and PostgreSQL refuses COPY FROM
into such a table; so readings are COPYed into a session-local staging table and moved with INSERT ... SELECT,
which routes each row to its daily partition. Ingest's writer does the same (with ON CONFLICT for identity).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from ingest.writer import COLUMNS
from tests import factories
from tests.factories import Organization, Patient
from tests.roles import RoleSettings


async def test_ingest_role_copies_into_partitioned_readings(
    db: psycopg.Connection[Any], org: Organization, patient: Patient
) -> None:
    device = factories.create_device(db, org.id, assign_to=patient)
    now = datetime.now(UTC)
    # Rows spread over 30 days, so the COPY routes into many partitions in one statement.
    rows = [
        (
            uuid.uuid4(),
            org.id,
            patient.id,
            device.id,
            1,
            60.0 + i % 40,
            60.0 + i % 40,
            "/min",
            now - timedelta(days=i % 30, seconds=i),
            now,
            f"spike-{i}",
            json.dumps({"seq": i}),
        )
        for i in range(100)
    ]
    conn = await asyncpg.connect(RoleSettings().url("ingest"))
    try:
        # Binary COPY needs a binary jsonb codec: a version byte (1) followed by the JSON text.
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda text: b"\x01" + text.encode(),
            decoder=lambda data: json.loads(data[1:]),
            schema="pg_catalog",
            format="binary",
        )
        with pytest.raises(asyncpg.FeatureNotSupportedError, match="row-level security"):
            await conn.copy_records_to_table("vital_readings", records=rows[:1], columns=COLUMNS)
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE staged (LIKE vital_readings INCLUDING DEFAULTS) ON COMMIT DROP")
            result = await conn.copy_records_to_table("staged", records=rows, columns=COLUMNS)
            moved = await conn.execute(
                f"INSERT INTO vital_readings ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM staged"
            )
        assert (result, moved) == ("COPY 100", "INSERT 0 100")
    finally:
        await conn.close()

    stored = db.execute(
        "SELECT count(*), count(DISTINCT tableoid), min(metadata->>'seq'), max(value)"
        " FROM vital_readings WHERE device_id = %s",
        (device.id,),
    ).fetchone()
    utc_days = {row[8].date() for row in rows}
    assert len(utc_days) >= 30
    assert stored == (100, len(utc_days), "0", 99.0)
