"""Settings for the migration runner and the other admin commands that connect as the schema owner."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MigrationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 55432
    postgres_db: str = "rpm"
    postgres_admin_user: str = "rpm_owner"
    postgres_admin_password: SecretStr = SecretStr("")
    postgres_user: str = "rpm_app"
    postgres_ingest_user: str = "rpm_ingest"
    postgres_processor_user: str = "rpm_processor"

    def admin_dsn(self, dbname: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.postgres_host,
            port=self.postgres_port,
            dbname=dbname or self.postgres_db,
            user=self.postgres_admin_user,
            password=self.postgres_admin_password.get_secret_value(),
        )

    def roles(self) -> dict[str, str]:
        """The role names that migrations refer to as {{owner}}, {{ingest}}, {{processor}} and {{app}}."""
        return {
            "owner": self.postgres_admin_user,
            "ingest": self.postgres_ingest_user,
            "processor": self.postgres_processor_user,
            "app": self.postgres_user,
        }
