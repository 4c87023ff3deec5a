"""Fixtures of the security tests: connections per role and fully populated tenants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import pytest

from migrations.settings import MigrationSettings
from tests.roles import Role, RoleSettings
from tests.security.tenant_rows import Tenant, make_tenant

Connect = Callable[..., AbstractContextManager[psycopg.Connection[Any]]]


@pytest.fixture(scope="session")
def role_settings() -> RoleSettings:
    return RoleSettings()


@pytest.fixture(scope="session")
def connect(role_settings: RoleSettings) -> Connect:
    """`with connect("app") as conn:` a connection as one of the project's roles (autocommit unless told)."""

    @contextmanager
    def open_as(role: Role, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(role_settings.dsn(role), autocommit=autocommit) as conn:
            yield conn

    return open_as


@pytest.fixture(scope="module")
def tenants(migration_settings: MigrationSettings) -> tuple[Tenant, Tenant]:
    """Two organizations, each with at least one row in every tenant-owned table (made once per module)."""
    with psycopg.connect(migration_settings.admin_dsn(), autocommit=True) as owner:
        return make_tenant(owner), make_tenant(owner)
