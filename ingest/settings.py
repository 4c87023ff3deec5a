"""The ingest service's settings, read once from the environment (and .env) in `__main__`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    """Configuration of the ingest service and its admin commands (provisioning, broker sync, rejections)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    rpm_state_dir: Path = Path("/var/tmp/rpm-telemetry")

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 55432
    postgres_db: str = "rpm"
    postgres_ingest_user: str = "rpm_ingest"
    postgres_ingest_password: SecretStr = SecretStr("")
    postgres_admin_user: str = "rpm_owner"
    postgres_admin_password: SecretStr = SecretStr("")

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 11883
    mqtt_ingest_user: str = "rpm-ingest"
    mqtt_ingest_password: SecretStr = SecretStr("")
    mqtt_processor_user: str = "rpm-processor"
    mqtt_processor_password: SecretStr = SecretStr("")

    mqtt_reload_timeout_s: float = Field(default=5.0, gt=0)

    @property
    def broker_dir(self) -> Path:
        return self.rpm_state_dir / "mosquitto"

    def admin_dsn(self) -> str:
        return _dsn(self.postgres_admin_user, self.postgres_admin_password, self)

    def ingest_dsn(self) -> str:
        return _dsn(self.postgres_ingest_user, self.postgres_ingest_password, self)


def _dsn(user: str, password: SecretStr, s: IngestSettings) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=s.postgres_host,
        port=s.postgres_port,
        dbname=s.postgres_db,
        user=user,
        password=password.get_secret_value(),
    )
