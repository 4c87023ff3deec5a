"""The delivery service's settings, read once from the environment (and .env) in `__main__`."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from urllib.parse import quote
from uuid import UUID

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.delivery.dispatcher import DispatchConfig
from processors.delivery.escalation import DEFAULT_CHAIN, EscalationPolicy
from processors.delivery.notification import Channel
from processors.delivery.rate_limit import Rate
from processors.delivery.retry import RetryPolicy
from processors.delivery.ssrf import EgressPolicy

__all__ = ["DeliverySettings"]


class DeliverySettings(BaseSettings):
    """Configuration of `python -m processors.delivery` (dispatcher + escalator); tuning knobs are settings."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 55432
    postgres_db: str = "rpm"
    postgres_processor_user: str = "rpm_processor"
    postgres_processor_password: SecretStr = SecretStr("")

    # --- dispatcher --------------------------------------------------------------------------------------------
    delivery_batch_size: int = Field(default=100, ge=1, le=10_000)
    delivery_lease_s: float = Field(default=60.0, gt=0)
    delivery_concurrency: int = Field(default=16, ge=1, le=512)
    delivery_poll_interval_s: float = Field(default=1.0, gt=0)
    # Empty: every organization. Otherwise this instance only handles these tenants (a shard of the work).
    delivery_organizations: tuple[UUID, ...] = ()

    delivery_retry_base_s: float = Field(default=5.0, gt=0)
    delivery_retry_cap_s: float = Field(default=900.0, gt=0)
    delivery_max_attempts: int = Field(default=8, ge=1, le=100)

    # Per-channel rate limits (messages per second, burst); 0 disables a channel's limit.
    delivery_email_per_s: float = Field(default=10.0, ge=0)
    delivery_email_burst: int = Field(default=20, ge=1)
    delivery_push_per_s: float = Field(default=50.0, ge=0)
    delivery_push_burst: int = Field(default=100, ge=1)
    delivery_webhook_per_s: float = Field(default=20.0, ge=0)
    delivery_webhook_burst: int = Field(default=40, ge=1)

    delivery_http_timeout_s: float = Field(default=10.0, gt=0)
    # SSRF guard (processors.delivery.ssrf): webhooks to loopback, link-local and private addresses are refused
    # unless this is true (local runs and tests whose receivers listen on loopback). Metadata, multicast,
    # unspecified and reserved addresses and non-http(s) schemes are refused regardless.
    delivery_webhook_allow_private: bool = False
    delivery_app_url: str = "http://127.0.0.1:8000"

    # --- channels ----------------------------------------------------------------------------------------------
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_sender: str = "alerts@rpm.invalid"
    # None: STARTTLS when the server offers it.
    smtp_start_tls: bool | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # Unset: push deliveries die with 'unsupported_channel' (no gateway configured).
    push_gateway_url: str | None = None

    # --- escalation --------------------------------------------------------------------------------------------
    delivery_escalate_after_s: float = Field(default=900.0, gt=0, le=86_400)
    delivery_escalation_chain: tuple[str, ...] = DEFAULT_CHAIN
    delivery_escalation_interval_s: float = Field(default=15.0, gt=0)

    # --- observability -----------------------------------------------------------------------------------------
    delivery_metrics_host: str = "127.0.0.1"
    # Prometheus /metrics, /healthz and /readyz; 0 picks a free port (logged), -1 disables the server.
    delivery_metrics_port: int = Field(default=9110, ge=-1, le=65535)
    delivery_backlog_interval_s: float = Field(default=10.0, gt=0)
    log_format: Literal["text", "json"] = "text"

    def processor_url(self) -> str:
        """A postgresql:// URL for asyncpg, as the processors' role."""
        return (
            f"postgresql://{quote(self.postgres_processor_user, safe='')}:"
            f"{quote(self.postgres_processor_password.get_secret_value(), safe='')}"
            f"@{self.postgres_host}:{self.postgres_port}/{quote(self.postgres_db, safe='')}"
        )

    @property
    def dispatch(self) -> DispatchConfig:
        return DispatchConfig(
            batch_size=self.delivery_batch_size,
            lease=timedelta(seconds=self.delivery_lease_s),
            concurrency=self.delivery_concurrency,
            poll_interval_s=self.delivery_poll_interval_s,
        )

    @property
    def egress(self) -> EgressPolicy:
        return EgressPolicy(allow_private=self.delivery_webhook_allow_private)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            base=timedelta(seconds=self.delivery_retry_base_s),
            cap=timedelta(seconds=max(self.delivery_retry_cap_s, self.delivery_retry_base_s)),
            max_attempts=self.delivery_max_attempts,
        )

    @property
    def rates(self) -> dict[Channel, Rate]:
        configured = {
            Channel.EMAIL: (self.delivery_email_per_s, self.delivery_email_burst),
            Channel.PUSH: (self.delivery_push_per_s, self.delivery_push_burst),
            Channel.WEBHOOK: (self.delivery_webhook_per_s, self.delivery_webhook_burst),
        }
        return {channel: Rate(per_s, burst) for channel, (per_s, burst) in configured.items() if per_s > 0}

    @property
    def escalation(self) -> EscalationPolicy:
        return EscalationPolicy(timedelta(seconds=self.delivery_escalate_after_s), self.delivery_escalation_chain)
