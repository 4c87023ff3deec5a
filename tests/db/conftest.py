from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol
from uuid import UUID

import psycopg
import pytest

from tests.roles import Role, RoleSettings


class RoleConnect(Protocol):
    def __call__(
        self, role: Role, organization_id: UUID | None = None
    ) -> AbstractContextManager[psycopg.Connection[Any]]: ...


@pytest.fixture(scope="session")
def role_settings() -> RoleSettings:
    return RoleSettings()


@pytest.fixture
def connect_as(role_settings: RoleSettings) -> RoleConnect:
    """Opens autocommit connections as one of the project's roles, acting for a tenant when given one (the app
    role sees only its tenant's rows): `with connect_as("app", org.id) as conn: ...`."""

    @contextmanager
    def connect(role: Role, organization_id: UUID | None = None) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(role_settings.dsn(role), autocommit=True) as conn:
            if organization_id is not None:
                conn.execute("SELECT set_config('rpm.organization_id', %s, false)", (str(organization_id),))
            yield conn

    return connect
