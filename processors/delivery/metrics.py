"""Prometheus metrics of the delivery dispatcher and escalator (one registry per instance, as in ingest)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from processors.delivery.notification import Channel

__all__ = ["AlertCounts", "DeliveryMetrics"]

AlertKey = tuple[str, bool, str]
"""(severity, retrospective, status) of vital_alerts rows."""


class AlertCounts(Collector):
    """Alert episodes as the table holds them, refreshed by the backlog poll.

    `alerts_raised_total` is a counter because episodes are never deleted (the count only grows);
    `alerts_unresolved` is the open/acknowledged work list.
    """

    def __init__(self) -> None:
        self._counts: dict[AlertKey, int] = {}

    def set_counts(self, counts: Mapping[AlertKey, int]) -> None:
        self._counts = dict(counts)

    def describe(self) -> Iterable[Metric]:
        return [self._raised(), self._unresolved()]

    @staticmethod
    def _raised() -> CounterMetricFamily:
        return CounterMetricFamily(
            "alerts_raised",
            "Alert episodes raised, by severity and retrospective (from vital_alerts)",
            labels=["severity", "retrospective"],
        )

    @staticmethod
    def _unresolved() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "alerts_unresolved",
            "Alert episodes not resolved yet, by severity and status",
            labels=["severity", "status"],
        )

    def collect(self) -> Iterable[Metric]:
        raised, unresolved = self._raised(), self._unresolved()
        totals: dict[tuple[str, str], int] = {}
        open_: dict[tuple[str, str], int] = {}
        for (severity, retrospective, status), count in self._counts.items():
            key = (severity, "true" if retrospective else "false")
            totals[key] = totals.get(key, 0) + count
            if status != "resolved":
                open_[(severity, status)] = open_.get((severity, status), 0) + count
        for labels, count in sorted(totals.items()):
            raised.add_metric(list(labels), count)
        for labels, count in sorted(open_.items()):
            unresolved.add_metric(list(labels), count)
        return [raised, unresolved]


_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600)
_OUTCOMES = ("sent", "retry", "dead")


class DeliveryMetrics:
    """Counters end in `_total`; durations are histograms in seconds; backlog gauges are refreshed by a poll."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.notifications_planned = Counter(
            "delivery_notifications_planned_total",
            "Pending notifications claimed and split into deliveries",
            registry=r,
        )
        self.deliveries_planned = Counter(
            "delivery_deliveries_planned_total", "Deliveries planned, by channel", ["channel"], registry=r
        )
        self.attempts = Counter(
            "delivery_attempts_total",
            "Delivery attempts, by channel and outcome (sent, retry, dead)",
            ["channel", "outcome"],
            registry=r,
        )
        self.failures = Counter(
            "delivery_failures_total",
            "Failed attempts, by channel and reason code",
            ["channel", "reason"],
            registry=r,
        )
        self.lost_leases = Counter(
            "delivery_lost_leases_total",
            "Attempts finished after another dispatcher took the delivery over",
            registry=r,
        )
        self.attempt_duration = Histogram(
            "delivery_attempt_duration_seconds",
            "Time to send one attempt, by channel",
            ["channel"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "delivery_latency_seconds",
            "Notification created -> delivered, by channel and priority",
            ["channel", "priority"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "delivery_rate_limited_seconds_total",
            "Time spent waiting for a channel's rate limit",
            ["channel"],
            registry=r,
        )
        self.escalations = Counter(
            "delivery_escalations_total",
            "Unacknowledged critical episodes escalated, by role paged",
            ["role"],
            registry=r,
        )
        self.notifications_pending = Gauge(
            "delivery_notifications_pending",
            "Notifications written by the processors and not yet planned",
            registry=r,
        )
        self.deliveries_backlog = Gauge(
            "delivery_backlog_deliveries",
            "Deliveries not final, by state (pending, sending, due)",
            ["state"],
            registry=r,
        )
        self.oldest_due = Gauge(
            "delivery_oldest_due_seconds", "Age of the oldest delivery that is due and not yet sent", registry=r
        )
        self.loop_errors = Counter(
            "delivery_loop_errors_total",
            "Dispatcher or escalator iterations that failed, by loop",
            ["loop"],
            registry=r,
        )
        self.alerts = AlertCounts()
        r.register(self.alerts)
        for channel in Channel:
            for outcome in _OUTCOMES:
                self.attempts.labels(channel.value, outcome)
            self.deliveries_planned.labels(channel.value)
        for state in ("pending", "sending", "due"):
            self.deliveries_backlog.labels(state)
