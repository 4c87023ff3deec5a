"""The ingest service's settings, read once from the environment (and .env) in `__main__`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.admission import Limits
from ingest.batching import BatchPolicy


class IngestSettings(BaseSettings):
    """Configuration of the ingest service and its admin commands (provisioning, broker sync, rejections).

    Service knobs are named `INGEST_*` in the environment; shared names (POSTGRES_*, MQTT_*, KAFKA_*,
    PROCESSOR_TRANSPORT) are the project's.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    rpm_state_dir: Path = Path("/var/tmp/rpm-telemetry")

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 55432
    postgres_db: str = "rpm"
    postgres_ingest_user: str = "rpm_ingest"
    postgres_ingest_password: SecretStr = SecretStr("")
    postgres_admin_user: str = "rpm_owner"
    postgres_admin_password: SecretStr = SecretStr("")
    postgres_processor_user: str = "rpm_processor"
    postgres_processor_password: SecretStr = SecretStr("")

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 11883
    mqtt_ingest_user: str = "rpm-ingest"
    mqtt_ingest_password: SecretStr = SecretStr("")
    mqtt_processor_user: str = "rpm-processor"
    mqtt_processor_password: SecretStr = SecretStr("")

    mqtt_reload_timeout_s: float = Field(default=5.0, gt=0)

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # Where committed readings go: the inline processors in this process, or Kafka (for the Faust processors).
    # `none`: no processors (no outbox rows); `discard`: the full hand-off path, events dropped (benchmarks).
    processor_transport: Literal["inline", "kafka", "none", "discard"] = "inline"

    # --- MQTT subscription -------------------------------------------------------------------------------------
    # A persistent MQTT 5 session: fixed client id (unique per ingest process), clean start off, session expiry > 0,
    # so the broker queues readings while this process is down.
    ingest_mqtt_client_id: str = "rpm-ingest-1"
    ingest_mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, gt=0, le=0xFFFFFFFF)
    # Unacknowledged QoS 1 messages the broker may have in flight to us (MQTT 5 Receive Maximum).
    ingest_mqtt_receive_maximum: int = Field(default=10_000, ge=1, le=65_535)
    # Empty (the default, one ingest process): a plain subscription in the persistent session, which Mosquitto keeps
    # across its own restart, so readings are queued even before ingest reconnects. A scale-out deployment sets a
    # group explicitly: processes in it split the readings ($share/<group>/...), but Mosquitto 2.0 does not persist
    # shared subscriptions, so after a broker restart readings are dropped until a member has resubscribed
    # (docs/reliability.md).
    ingest_mqtt_share_group: str = ""
    # Topic filters (JSON lists in the environment); narrower filters let tests own their devices' topics.
    ingest_mqtt_readings_filters: tuple[str, ...] = ("devices/+/readings",)
    # Empty: do not follow device status topics.
    ingest_mqtt_status_filters: tuple[str, ...] = ("devices/+/status",)
    ingest_mqtt_keepalive_s: int = Field(default=30, ge=5)
    ingest_reconnect_initial_s: float = Field(default=0.5, gt=0)
    ingest_reconnect_max_s: float = Field(default=30.0, gt=0)

    # --- pipeline ----------------------------------------------------------------------------------------------
    ingest_batch_max_size: int = Field(default=2_000, ge=1)
    ingest_batch_max_age_s: float = Field(default=0.05, ge=0)
    # Messages received but not yet written (beyond it, the MQTT handler waits and the broker stops sending).
    ingest_queue_max: int = Field(default=20_000, ge=1)
    ingest_writers: int = Field(default=4, ge=1, le=16)
    ingest_recent_identities: int = Field(default=200_000, ge=0)
    ingest_max_payload_bytes: int = Field(default=64 * 1024, ge=256, le=1024 * 1024)
    ingest_max_meta_bytes: int = Field(default=4 * 1024, ge=2)
    ingest_max_future_s: float = Field(default=300.0, ge=0)
    ingest_max_age_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    # At most one last_seen_at update per device per interval (readings); status messages always update.
    ingest_last_seen_interval_s: float = Field(default=60.0, ge=0)

    # --- database ----------------------------------------------------------------------------------------------
    ingest_db_timeout_s: float = Field(default=30.0, gt=0)
    ingest_db_retry_max_s: float = Field(default=5.0, gt=0)
    ingest_partition_interval_s: float = Field(default=3600.0, gt=0)

    # --- hand-off to processors --------------------------------------------------------------------------------
    ingest_relay_queue_max: int = Field(default=64, ge=1)
    # Outbox rows older than this are delivered by the recovery scan (crash recovery, or the relay fell behind).
    ingest_relay_lease_s: float = Field(default=30.0, gt=0)
    ingest_relay_scan_interval_s: float = Field(default=5.0, gt=0)
    ingest_relay_retry_max_s: float = Field(default=10.0, gt=0)
    kafka_readings_topic: str = "vital-readings"

    # --- lifecycle and observability ---------------------------------------------------------------------------
    ingest_shutdown_grace_s: float = Field(default=10.0, gt=0)
    ingest_metrics_host: str = "127.0.0.1"
    # Prometheus /metrics, /healthz and /readyz; 0 picks a free port (logged), -1 disables the server.
    ingest_metrics_port: int = Field(default=9108, ge=-1, le=65535)

    @property
    def broker_dir(self) -> Path:
        return self.rpm_state_dir / "mosquitto"

    @property
    def limits(self) -> Limits:
        return Limits(
            max_payload_bytes=self.ingest_max_payload_bytes,
            max_meta_bytes=self.ingest_max_meta_bytes,
            max_future=timedelta(seconds=self.ingest_max_future_s),
            max_age=timedelta(seconds=self.ingest_max_age_s),
        )

    @property
    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(self.ingest_batch_max_size, self.ingest_batch_max_age_s)

    @property
    def outbox_destination(self) -> str | None:
        """The outbox destination this deployment writes and relays ('kafka:<topic>', 'inline', 'discard')."""
        if self.processor_transport == "none":
            return None
        if self.processor_transport == "kafka":
            return f"kafka:{self.kafka_readings_topic}"
        return self.processor_transport

    def admin_dsn(self) -> str:
        return _dsn(self.postgres_admin_user, self.postgres_admin_password, self)

    def ingest_dsn(self) -> str:
        return _dsn(self.postgres_ingest_user, self.postgres_ingest_password, self)

    def processor_dsn(self) -> str:
        return _dsn(self.postgres_processor_user, self.postgres_processor_password, self)


def _dsn(user: str, password: SecretStr, s: IngestSettings) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(
        host=s.postgres_host,
        port=s.postgres_port,
        dbname=s.postgres_db,
        user=user,
        password=password.get_secret_value(),
    )
