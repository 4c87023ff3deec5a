"""Fixtures for ingest's integration tests: connections under the ingest role and the registry as stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from ingest.database import connect, load_units
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry


@pytest.fixture
async def ingest_conn(ingest_settings: IngestSettings) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection as the ingest role, with the session's staging table."""
    conn = await connect(ingest_settings, staging=True)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def units(ingest_conn: asyncpg.Connection) -> UnitRegistry:
    return await load_units(ingest_conn)
