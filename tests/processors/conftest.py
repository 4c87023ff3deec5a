"""Fixtures for the processors' integration tests (real PostgreSQL, real Kafka)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.roles import RoleSettings


@pytest.fixture(scope="session")
def roles() -> RoleSettings:
    return RoleSettings()


@pytest.fixture
async def processor_pool(roles: RoleSettings) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool under the processor role, as the runners use."""
    pool = await asyncpg.create_pool(roles.url("processor"), min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
