"""PostgreSQL adapter: connections under the ingest role, registry lookups, partition upkeep, error mapping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ingest.directory import Assignment, DeviceRecord
from ingest.errors import BatchRefusedError, DatabaseUnavailableError, IngestError
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry, build_registry

logger = logging.getLogger(__name__)

# SQLSTATE classes after which the same statement can succeed: connection exceptions, transaction rollbacks
# (serialization failures, deadlocks), insufficient resources, operator intervention (shutdown, query cancelled),
# system errors.
_RETRIABLE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})

STAGING_TABLE = "ingest_staging"
_STAGING_DDL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} (LIKE vital_readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)


async def connect(settings: IngestSettings, *, staging: bool = False) -> asyncpg.Connection:
    """A connection as the ingest role with a binary jsonb codec (and the session's staging table)."""
    try:
        conn = await asyncpg.connect(
            host=settings.postgres_host,
            port=settings.postgres_port,
            database=settings.postgres_db,
            user=settings.postgres_ingest_user,
            password=settings.postgres_ingest_password.get_secret_value(),
            timeout=settings.ingest_db_timeout_s,
            command_timeout=settings.ingest_db_timeout_s,
            server_settings={"application_name": f"ingest:{settings.ingest_mqtt_client_id}"},
        )
    except BaseException as exc:
        raise as_ingest_error(exc) from exc
    try:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda text: b"\x01" + text.encode(),
            decoder=lambda data: data[1:].decode(),
            schema="pg_catalog",
            format="binary",
        )
        if staging:
            await conn.execute(_STAGING_DDL)
    except BaseException as exc:
        conn.terminate()
        raise as_ingest_error(exc) from exc
    return conn


def as_ingest_error(exc: BaseException) -> BaseException:
    """Maps a driver or network failure to a retriable or refused IngestError; other exceptions pass through."""
    if isinstance(exc, IngestError | asyncio.CancelledError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None)
        if isinstance(exc, asyncpg.PostgresConnectionError) or (sqlstate or "")[:2] in _RETRIABLE_CLASSES:
            return DatabaseUnavailableError(f"{sqlstate}: {exc}")
        return BatchRefusedError(sqlstate, str(exc))
    # InternalClientError: the connection's protocol state is broken, e.g. PostgreSQL's shutdown notice arrived
    # while it was idle ("cannot switch to state 12; another operation (2) is in progress"); a new one will do.
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError | ConnectionError):
        return DatabaseUnavailableError(f"{type(exc).__name__}: {exc}")
    return exc


async def load_units(conn: asyncpg.Connection) -> UnitRegistry:
    types = await conn.fetch(
        "SELECT id, code, loinc, loinc_aliases, canonical_unit, plausible_min, plausible_max, decimal_precision"
        " FROM vital_types"
    )
    units = await conn.fetch("SELECT vital_type_id, unit, factor, pre_offset FROM vital_type_units")
    return build_registry((tuple(r) for r in types), (tuple(r) for r in units))


_DEVICES = """
SELECT d.serial, d.id, d.organization_id, d.status = 'revoked' AS revoked,
       coalesce(array_agg(a.patient_id ORDER BY a.assigned_from) FILTER (WHERE a.id IS NOT NULL), '{}') AS patients,
       coalesce(array_agg(a.assigned_from ORDER BY a.assigned_from) FILTER (WHERE a.id IS NOT NULL), '{}') AS starts,
       coalesce(array_agg(a.assigned_to ORDER BY a.assigned_from) FILTER (WHERE a.id IS NOT NULL), '{}') AS ends
  FROM devices d
  LEFT JOIN device_assignments a ON a.device_id = d.id
 WHERE d.serial = ANY($1::text[])
 GROUP BY d.serial, d.id, d.organization_id, d.status
"""


async def load_devices(conn: asyncpg.Connection, serials: Iterable[str]) -> dict[str, DeviceRecord]:
    """The registry records (with assignment history) of these serials; unknown serials are absent."""
    wanted = sorted(set(serials))
    if not wanted:
        return {}
    rows = await conn.fetch(_DEVICES, wanted)
    return {row["serial"]: _device(row) for row in rows}


def _device(row: Any) -> DeviceRecord:
    starts: list[datetime] = row["starts"]
    ends: list[datetime | None] = row["ends"]
    patients: list[UUID] = row["patients"]
    return DeviceRecord(
        id=row["id"],
        organization_id=row["organization_id"],
        serial=row["serial"],
        revoked=row["revoked"],
        assignments=tuple(Assignment(p, s, e) for p, s, e in zip(patients, starts, ends, strict=True)),
    )


async def ensure_partitions(conn: asyncpg.Connection, days_back: int = 31, days_ahead: int = 14) -> int:
    """Creates the missing daily partitions of vital_readings (a SECURITY DEFINER function of the schema)."""
    created: int = await conn.fetchval("SELECT ensure_vital_reading_partitions($1, $2)", days_back, days_ahead)
    if created:
        logger.info("created %d vital_readings partitions", created)
    return created
