"""`python -m processors.delivery`: the composition root. One TaskGroup: dispatcher, escalator, backlog gauges
and the HTTP server (/metrics, /healthz, /readyz); SIGTERM/SIGINT stop it after the passes in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time

import aiohttp
import asyncpg

from processors.delivery.dispatcher import Dispatcher
from processors.delivery.escalator import Escalator
from processors.delivery.in_app import InAppSender
from processors.delivery.mail import EmailSender
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.notification import Channel
from processors.delivery.push import PushSender
from processors.delivery.rate_limit import RateLimits
from processors.delivery.sender import Sender
from processors.delivery.settings import DeliverySettings
from processors.delivery.ssrf import guarded_session
from processors.delivery.store import TRANSIENT_ERRORS, DeliveryStore
from processors.delivery.timing import Clock, Monotonic, monotonic, utc_now
from processors.delivery.webhook import WebhookSender
from processors.health import HealthServer

__all__ = ["Readiness", "serve"]

logger = logging.getLogger(__name__)


class Readiness:
    """Ready once a backlog poll reached the database, and as long as the last one did within `stale_s`."""

    def __init__(self, stale_s: float, clock: Monotonic = monotonic) -> None:
        self._stale = stale_s
        self._clock = clock
        self._ok_at: float | None = None
        self._why = "starting"

    def ok(self) -> None:
        self._ok_at = self._clock()
        self._why = "ok"

    def failed(self, why: str) -> None:
        self._why = why

    def __call__(self) -> tuple[bool, str]:
        if self._ok_at is None:
            return False, self._why
        if self._clock() - self._ok_at > self._stale:
            return False, f"no database contact for {self._clock() - self._ok_at:.0f} s ({self._why})"
        return True, "ok"


async def _poll_backlog(
    store: DeliveryStore,
    metrics: DeliveryMetrics,
    readiness: Readiness,
    clock: Clock,
    interval: float,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        try:
            backlog = await store.backlog(clock())
            alerts = await store.alert_counts()
        except TRANSIENT_ERRORS as exc:
            metrics.loop_errors.labels("backlog").inc()
            readiness.failed(type(exc).__name__)
        else:
            metrics.notifications_pending.set(backlog.notifications_pending)
            metrics.deliveries_backlog.labels("pending").set(backlog.deliveries_pending)
            metrics.deliveries_backlog.labels("sending").set(backlog.deliveries_sending)
            metrics.deliveries_backlog.labels("due").set(backlog.deliveries_due)
            metrics.oldest_due.set(backlog.oldest_due_seconds)
            metrics.alerts.set_counts(alerts)
            readiness.ok()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def serve(
    settings: DeliverySettings,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock = utc_now,
    metrics: DeliveryMetrics | None = None,
    health: list[HealthServer] | None = None,
    handle_signals: bool = True,
) -> None:
    """Runs the dispatcher and the escalator until SIGTERM/SIGINT or `stop` is set.

    `health`, when given, receives the HTTP server (tests read its port once `started` is set).
    """
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    metrics = metrics or DeliveryMetrics()
    organizations = frozenset(settings.delivery_organizations)
    pool = await asyncpg.create_pool(
        settings.processor_url(), min_size=1, max_size=max(2, min(settings.delivery_concurrency, 16) + 2)
    )
    try:
        # Webhooks go to addresses organizations configure: their own session, behind the SSRF guard.
        async with aiohttp.ClientSession() as http, guarded_session(settings.egress) as hooks:
            senders: dict[Channel, Sender] = {
                Channel.IN_APP: InAppSender(),
                Channel.WEBHOOK: WebhookSender(hooks, clock, settings.delivery_http_timeout_s, policy=settings.egress),
                Channel.EMAIL: EmailSender(
                    settings.smtp_host,
                    settings.smtp_port,
                    settings.smtp_sender,
                    settings.delivery_app_url,
                    timeout_s=settings.delivery_http_timeout_s,
                    start_tls=settings.smtp_start_tls,
                    username=settings.smtp_username,
                    password=None if settings.smtp_password is None else settings.smtp_password.get_secret_value(),
                ),
            }
            if settings.push_gateway_url:
                senders[Channel.PUSH] = PushSender(http, settings.push_gateway_url, settings.delivery_http_timeout_s)
            store = DeliveryStore(pool, organizations)
            dispatcher = Dispatcher(
                store,
                senders,
                retry=settings.retry,
                limits=RateLimits(settings.rates),
                metrics=metrics,
                clock=clock,
                monotonic=time.monotonic,
                config=settings.dispatch,
                rng=random.Random(),
            )
            escalator = Escalator(
                pool,
                settings.escalation,
                metrics,
                clock,
                organizations=organizations,
                interval_s=settings.delivery_escalation_interval_s,
            )
            readiness = Readiness(stale_s=max(60.0, 3 * settings.delivery_backlog_interval_s))
            server = HealthServer(
                settings.delivery_metrics_host, settings.delivery_metrics_port, metrics.registry, readiness
            )
            if health is not None:
                health.append(server)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(dispatcher.run(stop), name="dispatch")
                tg.create_task(escalator.run(stop), name="escalate")
                tg.create_task(
                    _poll_backlog(store, metrics, readiness, clock, settings.delivery_backlog_interval_s, stop),
                    name="backlog",
                )
                if settings.delivery_metrics_port >= 0:
                    tg.create_task(server.run(stop), name="http")
            logger.info("delivery stopped")
    finally:
        await pool.close()
