"""Connection strings for each database role, for tests that check what a role may and may not do."""

from __future__ import annotations

from typing import Literal

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

    def dsn(self, role: Role, dbname: str | None = None) -> str:
        user, password = {
            "owner": (self.postgres_admin_user, self.postgres_admin_password),
            "ingest": (self.postgres_ingest_user, self.postgres_ingest_password),
            "processor": (self.postgres_processor_user, self.postgres_processor_password),
            "app": (self.postgres_user, self.postgres_password),
        }[role]
        return make_conninfo(
            host=self.postgres_host,
            port=self.postgres_port,
            dbname=dbname or self.postgres_db,
            user=user,
            password=password.get_secret_value(),
        )
