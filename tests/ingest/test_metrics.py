"""The batch histogram is exposed exactly like prometheus_client's own Histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ingest.metrics import BatchHistogram

BUCKETS = (0.05, 0.1, 1, 60, 604800)


def exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_a_batch_histogram_exposes_what_a_histogram_would() -> None:
    values = [0.0, 0.05, 0.050001, 0.2, 1.0, 59.9, 60.0, 61.0, 604800.0, 1e9, -3.0]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("lag_seconds", "Lag", BUCKETS, registry=ours)
    reference = Histogram("lag_seconds", "Lag", buckets=BUCKETS, registry=theirs)
    batch.observe_many(values[:4])
    batch.observe_many(iter(values[4:]))
    batch.observe(2.5)
    for value in [*values, 2.5]:
        reference.observe(max(0.0, value))
    assert exposition(ours) == exposition(theirs)
    assert ours.get_sample_value("lag_seconds_count") == len(values) + 1
    assert ours.get_sample_value("lag_seconds_bucket", {"le": "0.05"}) == 3  # -3 counted as 0, and 0.05 itself


def test_an_empty_batch_histogram_exposes_zeroes() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    BatchHistogram("lag_seconds", "Lag", BUCKETS, registry=ours).observe_many([])
    Histogram("lag_seconds", "Lag", buckets=BUCKETS, registry=theirs)
    assert exposition(ours) == exposition(theirs)
