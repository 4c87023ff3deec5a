"""The dispatcher loop: plan pending notifications, claim due deliveries, send them through their channels,
record each attempt, retry with backoff or give up, at least once per delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from processors.delivery.errors import ChannelError, RejectedError
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.notification import Channel, DeliveryStatus
from processors.delivery.push import UNREGISTERED
from processors.delivery.rate_limit import RateLimits
from processors.delivery.retry import Dead, RetryPolicy
from processors.delivery.sender import Job, Sender
from processors.delivery.store import TRANSIENT_ERRORS, DeliveryStore, Outcome
from processors.delivery.timing import Clock, Monotonic

__all__ = ["DispatchConfig", "Dispatcher"]

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    """Tuning knobs (filled from `DeliverySettings`)."""

    batch_size: int = 100
    lease: timedelta = timedelta(seconds=60)
    concurrency: int = 16
    poll_interval_s: float = 1.0


class Dispatcher:
    def __init__(
        self,
        store: DeliveryStore,
        senders: Mapping[Channel, Sender],
        *,
        retry: RetryPolicy,
        limits: RateLimits,
        metrics: DeliveryMetrics,
        clock: Clock,
        monotonic: Monotonic,
        config: DispatchConfig = DispatchConfig(),
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._store = store
        self._senders = senders
        self._retry = retry
        self._limits = limits
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._config = config
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._slots = asyncio.Semaphore(config.concurrency)

    async def run_once(self) -> int:
        """One pass: plan what is pending, then send what is due. Returns the number of deliveries attempted."""
        now = self._clock()
        planned = await self._store.plan_pending(now, self._config.batch_size)
        if planned:
            self._metrics.notifications_planned.inc(len(planned))
            for _, deliveries in planned:
                for delivery in deliveries:
                    self._metrics.deliveries_planned.labels(delivery.channel.value).inc()
        jobs = await self._store.claim_due(self._clock(), self._config.batch_size, self._config.lease)
        if jobs:
            async with asyncio.TaskGroup() as group:
                for job in jobs:
                    group.create_task(self._deliver(job), name=f"deliver-{job.delivery_id}")
        return len(jobs)

    async def run(self, stop: asyncio.Event) -> None:
        """Passes until `stop` is set; a full batch goes on at once, otherwise waits `poll_interval_s`."""
        while not stop.is_set():
            busy = False
            try:
                busy = await self.run_once() >= self._config.batch_size
            except TRANSIENT_ERRORS as exc:
                # The database is unreachable: nothing was claimed or leases will expire; try again later.
                self._metrics.loop_errors.labels("dispatch").inc()
                logger.warning("dispatch pass failed: %s", type(exc).__name__)
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._config.poll_interval_s)

    async def _throttle(self, channel: Channel) -> None:
        waited = 0.0
        while (wait := self._limits.take(channel)) > 0:
            waited += wait
            await self._sleep(wait)
        if waited:
            self._metrics.rate_limited.labels(channel.value).inc(waited)

    async def _deliver(self, job: Job) -> None:
        async with self._slots:
            await self._throttle(job.channel)
            started = self._clock()
            t0 = self._monotonic()
            code: int | None = None
            error: ChannelError | None = None
            sender = self._senders.get(job.channel)
            try:
                if sender is None:
                    raise RejectedError("unsupported_channel", job.channel.value)
                if job.target is None:
                    raise RejectedError("no_target", job.channel.value)
                code = await sender.send(job)
            except ChannelError as exc:
                error = exc
            except Exception:
                # A bug in one channel must not stop the others: the attempt counts as a retriable failure, so a
                # poison message dies after max_attempts instead of crashing every dispatcher that claims it.
                logger.exception("channel %s raised unexpectedly on delivery %s", job.channel, job.delivery_id)
                error = ChannelError("internal_error")
            elapsed = max(0.0, self._monotonic() - t0)
            self._metrics.attempt_duration.labels(job.channel.value).observe(elapsed)
            outcome = self._outcome(job, started, elapsed, code, error)
            owned = await self._store.record(job, outcome)
            if not owned:
                self._metrics.lost_leases.inc()
                logger.warning(
                    "delivery %s attempt %d finished after its lease was taken", job.delivery_id, job.attempt
                )
                return
            label = {DeliveryStatus.SENT: "sent", DeliveryStatus.PENDING: "retry"}.get(outcome.status, "dead")
            self._metrics.attempts.labels(job.channel.value, label).inc()
            if error is not None:
                self._metrics.failures.labels(job.channel.value, error.reason).inc()
            if outcome.status is DeliveryStatus.SENT:
                latency = (self._clock() - job.notification.created_at).total_seconds()
                self._metrics.latency.labels(job.channel.value, job.notification.priority.value).observe(
                    max(0.0, latency)
                )
            elif outcome.status is DeliveryStatus.DEAD:
                logger.warning(
                    "delivery %s on %s is dead after %d attempts: %s",
                    job.delivery_id,
                    job.channel,
                    job.attempt,
                    outcome.error,
                )

    def _outcome(
        self, job: Job, started: datetime, elapsed: float, code: int | None, error: ChannelError | None
    ) -> Outcome:
        duration_ms = round(elapsed * 1000)
        if error is None:
            return Outcome(DeliveryStatus.SENT, started, duration_ms, response_code=code)
        step = self._retry.after_failure(job.attempt, self._clock(), self._rng, retriable=error.retriable)
        if isinstance(step, Dead):
            return Outcome(
                DeliveryStatus.DEAD,
                started,
                duration_ms,
                error=str(error)[:300],
                response_code=error.response_code,
                deactivate_device=error.reason == UNREGISTERED,
            )
        return Outcome(
            DeliveryStatus.PENDING,
            started,
            duration_ms,
            error=str(error)[:300],
            response_code=error.response_code,
            retry_at=step.at,
        )
