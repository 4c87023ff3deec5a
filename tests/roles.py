"""Connection strings for each database role, for tests that check what a role may and may not do."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from psycopg.conninfo import make_conninfo
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Role = Literal["owner", "ingest", "processor", "app"]


class RoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 55432
    postgres_db: str = "rpm"
    postgres_admin_user: str = "rpm_owner"
    postgres_admin_password: SecretStr = SecretStr("")
    postgres_ingest_user: str = "rpm_ingest"
    postgres_ingest_password: SecretStr = SecretStr("")
    postgres_processor_user: str = "rpm_processor"
    postgres_processor_password: SecretStr = SecretStr("")
    postgres_user: str = "rpm_app"
    postgres_password: SecretStr = SecretStr("")

    def _credentials(self, role: Role) -> tuple[str, SecretStr]:
        return {
            "owner": (self.postgres_admin_user, self.postgres_admin_password),
            "ingest": (self.postgres_ingest_user, self.postgres_ingest_password),
            "processor": (self.postgres_processor_user, self.postgres_processor_password),
            "app": (self.postgres_user, self.postgres_password),
        }[role]

    def url(self, role: Role) -> str:
        """A postgresql:// URL, the form asyncpg takes."""
        user, password = self._credentials(role)
        return (
            f"postgresql://{quote(user, safe='')}:{quote(password.get_secret_value(), safe='')}"
            f"@{self.postgres_host}:{self.postgres_port}/{quote(self.postgres_db, safe='')}"
        )

    def dsn(self, role: Role, dbname: str | None = None) -> str:
        """A libpq key=value string, the form psycopg takes."""
        user, password = self._credentials(role)
        return make_conninfo(
            host=self.postgres_host,
            port=self.postgres_port,
            dbname=dbname or self.postgres_db,
            user=user,
            password=password.get_secret_value(),
        )
