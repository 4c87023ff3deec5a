"""Prometheus metrics of the ingest service (one registry per service instance, so tests can run several)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ingest.rejection import RejectionReason
from ingest.writer import Written

_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400, 604800)


class Metrics:
    """Counters end in `_total`, histograms carry their unit in the name."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "ingest_messages_received_total", "MQTT messages received, by topic kind", ["kind"], registry=r
        )
        self.messages_accepted = Counter(
            "ingest_messages_accepted_total", "Messages not refused as a whole (readings may be refused)", registry=r
        )
        self.messages_refused = Counter(
            "ingest_messages_refused_total", "Messages refused as a whole, by reason", ["reason"], registry=r
        )
        self.readings_refused = Counter(
            "ingest_readings_refused_total", "Readings refused, by reason", ["reason"], registry=r
        )
        self.readings_written = Counter("ingest_readings_written_total", "Readings committed", registry=r)
        self.readings_duplicate = Counter(
            "ingest_readings_duplicate_total",
            "Readings that repeated a stored identity with the same value",
            registry=r,
        )
        self.readings_conflicting = Counter(
            "ingest_readings_conflicting_total",
            "Readings that repeated a stored identity with another value",
            registry=r,
        )
        self.acks = Counter("ingest_acks_total", "PUBACKs released after commit", registry=r)
        self.batch_size = Histogram(
            "ingest_batch_size_messages", "Messages per written batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.flush_duration = Histogram(
            "ingest_flush_duration_seconds",
            "Judge + write + commit time per batch",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.lag = BatchHistogram(
            "ingest_lag_seconds", "received_at - measured_at of committed readings", _LAG_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("ingest_queue_depth_messages", "Messages received and not yet written", registry=r)
        self.inflight = Gauge("ingest_inflight_messages", "Messages received and not yet acknowledged", registry=r)
        self.db_errors = Counter(
            "ingest_db_errors_total", "Database failures, by kind (retriable or refused)", ["kind"], registry=r
        )
        self.outbox_backlog = Gauge("ingest_outbox_backlog_rows", "Outbox rows not yet handed off", registry=r)
        self.handoff_events = Counter(
            "ingest_handoff_events_total", "Committed readings handed to the processors", ["path"], registry=r
        )
        self.handoff_failures = Counter("ingest_handoff_failures_total", "Failed hand-off attempts", registry=r)
        self.handoff_deferred = Counter(
            "ingest_handoff_deferred_total",
            "Batches left to the outbox scan because the relay queue was full",
            registry=r,
        )
        self.mqtt_connected = Gauge("ingest_mqtt_connected", "1 while connected to the broker", registry=r)
        self.mqtt_reconnects = Counter("ingest_mqtt_reconnects_total", "Reconnection attempts", registry=r)
        self.status_updates = Counter("ingest_status_updates_total", "Device status messages applied", registry=r)
        self.partitions_created = Counter(
            "ingest_partitions_created_total", "vital_readings partitions created", registry=r
        )
        self.received_readings = self.messages_received.labels("readings")
        self.received_status = self.messages_received.labels("status")
        for reason in RejectionReason:
            (self.messages_refused if reason.refuses_message else self.readings_refused).labels(reason.value)

    def record(self, written: Written, flush_seconds: float) -> None:
        """Counts a committed batch."""
        self.batch_size.observe(len(written.outcomes))
        self.flush_duration.observe(flush_seconds)
        self.readings_written.inc(written.stored)
        # Counted per batch, not per message: each inc takes a lock, and a batch holds thousands of messages.
        accepted = duplicates = conflicting = 0
        for outcome in written.outcomes:
            duplicates += outcome.duplicates
            message_refused = False
            for rejection in outcome.refused:
                if rejection.reading_index is None:
                    message_refused = True
                    self.messages_refused.labels(rejection.reason.value).inc()
                else:
                    self.readings_refused.labels(rejection.reason.value).inc()
                    if rejection.reason is RejectionReason.CONFLICTING_DUPLICATE:
                        conflicting += 1
            if not message_refused:
                accepted += 1
        if accepted:
            self.messages_accepted.inc(accepted)
        if duplicates:
            self.readings_duplicate.inc(duplicates)
        if conflicting:
            self.readings_conflicting.inc(conflicting)
        self.lag.observe_many((e.received_at - e.measured_at).total_seconds() for e in written.events)


class BatchHistogram(Collector):
    """A histogram that counts a whole batch of observations in one call (prometheus_client's `Histogram.observe`
    takes a lock and walks the buckets per value: a few microseconds per reading at ingest's rates).

    Exposed exactly like a `Histogram` without labels: `_bucket{le=...}`, `_count`, `_sum`. Only the event loop's
    thread observes and collects (the metrics page is served by the same loop).
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = sorted(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        registry.register(self)

    def observe_many(self, values: Iterable[float], floor: float = 0.0) -> None:
        """Counts each value, raised to `floor` first (lag below zero is clock skew, counted as zero)."""
        counts, bounds = self._counts, self._bounds
        total = 0.0
        for value in values:
            counted = max(value, floor)
            counts[bisect_left(bounds, counted)] += 1
            total += counted
        self._sum += total

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, running = [], 0
        for bound, count in zip([*map(floatToGoString, self._bounds), "+Inf"], self._counts, strict=True):
            running += count
            cumulative.append((bound, running))
        yield HistogramMetricFamily(self._name, self._documentation, buckets=cumulative, sum_value=self._sum)
