"""Prometheus metrics of the processors' long-running runners: the clock (`python -m processors clock`) and the
Faust worker (`python -m processors faust worker`). One registry per instance, as in ingest and delivery; each
process exports the series of the runner it runs (the others stay at zero)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from processors.alerts import AlertChange, ChangeKind
from processors.engine import Output
from processors.events import Event, Tick
from processors.notifications import Notification

__all__ = ["ProcessorMetrics"]

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
ERROR_STAGES = ("tick", "batch", "poll")


class ProcessorMetrics:
    """Counters end in `_total`; durations are histograms in seconds; sizes are histograms in their unit."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.start_time = Gauge(
            "processors_start_time_seconds", "When this runner started (Unix time): a change is a restart", registry=r
        )
        self.start_time.set(time.time())
        # The clock.
        self.ticks = Counter("processors_ticks_total", "Clock passes over the monitored patients completed", registry=r)
        self.tick_duration = Histogram(
            "processors_tick_duration_seconds",
            "Time of one complete clock pass (list patients, evaluate and commit every batch)",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.last_tick = Gauge(
            "processors_last_tick_timestamp_seconds", "When the last complete clock pass ended (Unix time)", registry=r
        )
        self.tick_patients = Counter(
            "processors_tick_patients_total", "Patients visited by clock passes (one tick event each)", registry=r
        )
        # The Faust worker.
        self.records_consumed = Counter(
            "processors_records_consumed_total", "Kafka records taken by the Faust agent", registry=r
        )
        self.batch_size = Histogram(
            "processors_batch_size_events", "Events per committed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_duration = Histogram(
            "processors_batch_duration_seconds",
            "Time from taking a batch to its commit (retries included)",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "processors_consumer_lag_records",
            "Records of the readings topic not yet committed by the consumer group, on this worker's partitions",
            registry=r,
        )
        self.partitions_assigned = Gauge(
            "processors_partitions_assigned", "Readings-topic partitions assigned to this worker", registry=r
        )
        # Both runners.
        self.events = Counter(
            "processors_events_evaluated_total",
            "Events committed through the engine, by kind (reading, tick)",
            ["kind"],
            registry=r,
        )
        self.alert_changes = Counter(
            "processors_alert_changes_total",
            "Alert episode transitions written, by kind (opened, escalated, promoted, reminded, cleared)",
            ["kind"],
            registry=r,
        )
        self.notifications = Counter(
            "processors_notifications_created_total",
            "Notifications emitted for the care teams (idempotent: a replay counts again, inserts nothing)",
            registry=r,
        )
        self.errors = Counter(
            "processors_errors_total",
            "Failed clock passes, batches (retried) and probes, by stage (tick, batch, poll)",
            ["stage"],
            registry=r,
        )
        self.quarantined = Counter(
            "processors_quarantined_events_total",
            "Events set aside in processor_quarantine after a failure retrying cannot fix, by kind (reading, tick)",
            ["kind"],
            registry=r,
        )
        self.listening = Gauge(
            "processors_listening", "1 while LISTENing for requirement and context changes", registry=r
        )
        for kind in ChangeKind:
            self.alert_changes.labels(kind.value)
        for event_kind in ("reading", "tick"):
            self.events.labels(event_kind)
            self.quarantined.labels(event_kind)
        for stage in ERROR_STAGES:
            self.errors.labels(stage)

    def count_outputs(self, outputs: Iterable[Output]) -> None:
        """Counts the alert transitions and notifications of a committed batch."""
        notifications = 0
        changes: dict[str, int] = {}
        for output in outputs:
            if isinstance(output, AlertChange):
                changes[output.kind.value] = changes.get(output.kind.value, 0) + 1
            elif isinstance(output, Notification):
                notifications += 1
        for kind, count in changes.items():
            self.alert_changes.labels(kind).inc(count)
        if notifications:
            self.notifications.inc(notifications)

    def count_quarantined(self, events: Iterable[Event]) -> None:
        """Counts events set aside in quarantine, by kind."""
        for event in events:
            self.quarantined.labels("tick" if isinstance(event, Tick) else "reading").inc()

    def batch_committed(self, by_patient: Iterable[Sequence[Event]], outputs: Iterable[Output], seconds: float) -> None:
        """Counts a committed batch of the Faust runner: its events by kind, size, duration and outputs."""
        readings = ticks = 0
        for events in by_patient:
            for event in events:
                if isinstance(event, Tick):
                    ticks += 1
                else:
                    readings += 1
        self.events.labels("reading").inc(readings)
        self.events.labels("tick").inc(ticks)
        self.batch_size.observe(readings + ticks)
        self.batch_duration.observe(seconds)
        self.count_outputs(outputs)
