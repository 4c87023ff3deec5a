from __future__ import annotations

from collections.abc import Iterator

import pytest

from migrations.settings import MigrationSettings
from scripts.database import scratch_database


@pytest.fixture
def scratch_db(migration_settings: MigrationSettings) -> Iterator[str]:
    """A new empty database owned by the schema owner; dropped afterwards. Yields its DSN."""
    with scratch_database(migration_settings, "scratch") as name:
        yield migration_settings.admin_dsn(name)
