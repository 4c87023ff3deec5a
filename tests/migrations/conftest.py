from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from migrations.settings import MigrationSettings


@pytest.fixture
def scratch_db(migration_settings: MigrationSettings) -> Iterator[str]:
    """A new empty database owned by the schema owner; dropped afterwards. Yields its DSN."""
    name = f"rpm_scratch_{secrets.token_hex(4)}"
    admin: psycopg.Connection[Any]
    with psycopg.connect(migration_settings.admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield migration_settings.admin_dsn(name)
    finally:
        with psycopg.connect(migration_settings.admin_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
