"""The processors' settings, read once from the environment (and .env) in `__main__`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote
from uuid import UUID

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.context import EngineConfig


class ProcessorSettings(BaseSettings):
    """Configuration of both runners (inline and Faust) and of the engine they share."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    rpm_state_dir: Path = Path("/var/tmp/rpm-telemetry")

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 55432
    postgres_db: str = "rpm"
    postgres_processor_user: str = "rpm_processor"
    postgres_processor_password: SecretStr = SecretStr("")
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=4, ge=1)

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # Ingest produces committed readings here, keyed by patient id (docs/protocol.md).
    processor_topic: str = "vital-readings"
    # Faust application id: also the consumer group and the prefix of its changelog topics.
    processor_app_id: str = "rpm-processors"
    processor_topic_partitions: int = Field(default=4, ge=1)
    # Faust's stream.take: up to this many events per batch, waiting at most this long to fill it. 0.2 s, not less:
    # with 20-50 ms windows at ~1,200 events/s, p99 publish->page was ~1.8 s and ~15 % of the pages had not come 30 s
    # after the load ended (small batches, and faust-streaming's take buffer holding records); with 0.2 s, p99 0.36 s
    # and every page (docs/benchmarks.md, processors).
    processor_batch_max: int = Field(default=500, ge=1)
    processor_batch_within_s: float = Field(default=0.2, gt=0)
    # A worker that dies without leaving its group keeps its partitions this long (Faust's default is 60 s).
    processor_session_timeout_s: float = Field(default=10, ge=6)
    # Stall watchdog: a partition with unprocessed records whose committed offset has not moved for this long
    # makes the worker exit (code 70) for its supervisor to restart it; 0 disables the watchdog.
    processor_stall_timeout_s: float = Field(default=60, ge=0)

    # The engine.
    processor_lateness_horizon_s: float = Field(default=900, gt=0)
    processor_silent_after_s: float = Field(default=86400, gt=0)
    processor_schedule_ahead_s: float = Field(default=86400, gt=0)
    processor_late_limit_s: float = Field(default=4 * 3600, gt=0)
    # The runner's clock: ticks (missed checks, silent devices, quiet-time clears); 0 disables them.
    processor_tick_interval_s: float = Field(default=60, ge=0)
    processor_tick_batch: int = Field(default=200, ge=1)
    # Upper bound on how stale a cached patient context may get if a database notification is lost.
    processor_context_ttl_s: float = Field(default=300, gt=0)
    # The clock's ticks cover only these organizations' patients (empty: every organization), like
    # DELIVERY_ORGANIZATIONS: several clocks can share the work, and tests tick only their own tenant.
    processor_tick_organizations: tuple[UUID, ...] = ()
    # SIGTERM: a tick in flight gets this long to finish its batch, then it is cancelled (its transaction rolls
    # back: ticks are idempotent, the next run repeats it) and the pool is closed within the same bound.
    processor_stop_grace_s: float = Field(default=2.0, ge=0)

    # Prometheus /metrics, /healthz and /readyz of `python -m processors clock` and of the Faust worker;
    # 0 picks a free port (logged), -1 disables the server (ingest uses 9108, delivery 9110).
    processor_metrics_host: str = "127.0.0.1"
    processor_clock_metrics_port: int = Field(default=9109, ge=-1, le=65535)
    processor_faust_metrics_port: int = Field(default=9111, ge=-1, le=65535)
    # `python -m processors clock` logs one JSON object per line with "json" (as the delivery service; the Faust
    # worker configures its own logging).
    log_format: Literal["text", "json"] = "text"

    @property
    def faust_datadir(self) -> Path:
        return self.rpm_state_dir / "faust" / self.processor_app_id

    def engine(self) -> EngineConfig:
        return EngineConfig(
            lateness_horizon=timedelta(seconds=self.processor_lateness_horizon_s),
            silent_after=timedelta(seconds=self.processor_silent_after_s),
            schedule_ahead=timedelta(seconds=self.processor_schedule_ahead_s),
            late_limit=timedelta(seconds=self.processor_late_limit_s),
        )

    def database_url(self) -> str:
        """postgresql:// URL for asyncpg, as the processor role."""
        password = quote(self.postgres_processor_password.get_secret_value(), safe="")
        return (
            f"postgresql://{quote(self.postgres_processor_user, safe='')}:{password}"
            f"@{self.postgres_host}:{self.postgres_port}/{quote(self.postgres_db, safe='')}"
        )
