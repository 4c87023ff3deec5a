from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import pytest

from tests.roles import Role, RoleSettings

RoleConnect = Callable[[Role], AbstractContextManager[psycopg.Connection[Any]]]


@pytest.fixture(scope="session")
def role_settings() -> RoleSettings:
    return RoleSettings()


@pytest.fixture
def connect_as(role_settings: RoleSettings) -> Iterator[RoleConnect]:
    """Opens autocommit connections as one of the project's roles: `with connect_as("app") as conn: ...`."""

    @contextmanager
    def connect(role: Role) -> Iterator[psycopg.Connection[Any]]:
        with psycopg.connect(role_settings.dsn(role), autocommit=True) as conn:
            yield conn

    yield connect
