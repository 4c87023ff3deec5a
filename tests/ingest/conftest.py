"""Fixtures for ingest's integration tests: connections under the ingest role and the registry as stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import asyncpg
import pytest

from ingest.database import connect, load_units
from ingest.settings import IngestSettings
from ingest.units import UnitRegistry
from tests.ingest.harness import IngestProcess, end_session
from tests.roles import RoleSettings


@pytest.fixture
async def ingest_conn(ingest_settings: IngestSettings) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection as the ingest role, with the session's staging table."""
    conn = await connect(ingest_settings, staging=True)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def processor_pool() -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool under the processor role (the inline processors' own)."""
    pool = await asyncpg.create_pool(RoleSettings().url("processor"), min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def units(ingest_conn: asyncpg.Connection) -> UnitRegistry:
    return await load_units(ingest_conn)


@pytest.fixture
async def ingest_process(ingest_settings: IngestSettings) -> AsyncIterator[Callable[..., IngestProcess]]:
    """Starts `python -m ingest serve` subprocesses (see tests/ingest/harness.py); stops them and removes their
    MQTT sessions afterwards."""
    started: list[IngestProcess] = []

    def start(serials: Iterable[str], **env: Any) -> IngestProcess:
        process = IngestProcess(serials, **env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    for client_id in {p.client_id for p in started}:
        await end_session(ingest_settings, client_id)
