"""The simulators' settings, read once from the environment (and .env) in `__main__`."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SimulatorSettings(BaseSettings):
    """Where the broker is, where the seeded fleet's credentials are, and an optional multiplexing identity."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 11883
    device_credentials_file: Path = Path("device_credentials.json")
    # A broker user allowed to publish on every device's topic (load tests only); fleet --multiplex needs it.
    mqtt_loadgen_user: str = ""
    mqtt_loadgen_password: SecretStr = SecretStr("")
