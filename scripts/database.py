"""Connections for the database tools (db-test, db-compare): every role's DSN, and scratch databases.

A scratch database is created by the schema owner (it has CREATEDB), migrated with `migrations.runner`, and
dropped on exit, so the tools learn what the migrations define without touching the project database.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from migrations import runner
from migrations.settings import MigrationSettings

Role = Literal["owner", "ingest", "processor", "app"]
ROLES: tuple[Role, ...] = ("owner", "ingest", "processor", "app")


class DatabaseSettings(MigrationSettings):
    """The migration settings plus the other roles' passwords (same POSTGRES_* names as the services)."""

    postgres_password: SecretStr = SecretStr("")
    postgres_ingest_password: SecretStr = SecretStr("")
    postgres_processor_password: SecretStr = SecretStr("")

    def user(self, role: Role) -> str:
        return self.roles()[role]

    def password(self, role: Role) -> SecretStr:
        return {
            "owner": self.postgres_admin_password,
            "ingest": self.postgres_ingest_password,
            "processor": self.postgres_processor_password,
            "app": self.postgres_password,
        }[role]

    def url(self, role: Role) -> str:
        """A postgresql:// URL, the form asyncpg takes."""
        return (
            f"postgresql://{quote(self.user(role), safe='')}:{quote(self.password(role).get_secret_value(), safe='')}"
            f"@{self.postgres_host}:{self.postgres_port}/{quote(self.postgres_db, safe='')}"
        )

    def dsn(self, role: Role, dbname: str | None = None) -> str:
        """A libpq key=value string, the form psycopg takes."""
        password = self.password(role)
        return make_conninfo(
            host=self.postgres_host,
            port=self.postgres_port,
            dbname=dbname or self.postgres_db,
            user=self.user(role),
            password=password.get_secret_value(),
            application_name="rpm-db-tools",
        )


@contextmanager
def scratch_database(settings: MigrationSettings, purpose: str) -> Iterator[str]:
    """Creates an empty database next to the project one and drops it afterwards; yields its name."""
    name = f"{settings.postgres_db}_{purpose}_{secrets.token_hex(4)}"
    admin: psycopg.Connection[Any]
    with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def migrated_scratch(settings: MigrationSettings, purpose: str) -> Iterator[str]:
    """A scratch database with every migration of this checkout applied; yields its name."""
    with scratch_database(settings, purpose) as name:
        runner.migrate(settings.admin_dsn(name), settings.roles())
        yield name
