"""Threshold arithmetic and the window rules at one position."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from processors.alerts import Direction, Rule, Severity
from processors.requirements import Requirement
from processors.rules import breach_at, clears_at, track
from processors.state import Sample

T0 = datetime(2026, 3, 5, 12, tzinfo=UTC)


def requirement(**columns: object) -> Requirement:
    base: dict[str, object] = {
        "id": uuid4(), "vital_type_id": 1, "vital_type": "heart_rate", "unit": "/min", "version": 1,
        "effective_from": T0 - timedelta(days=30),
    }  # fmt: skip
    return Requirement(**{**base, **columns})  # type: ignore[arg-type]


def window(*values: float, every: timedelta = timedelta(minutes=10)) -> tuple[Sample, ...]:
    return tuple(Sample(uuid4(), T0 + i * every, v) for i, v in enumerate(values))


def test_a_limit_itself_is_in_range_and_the_margin_band_neither_breaches_nor_clears() -> None:
    r = requirement(warning_high=100, critical_high=140, hysteresis_margin=5)
    assert r.level(100, Direction.HIGH) is None
    assert r.level(100.5, Direction.HIGH) is Severity.WARNING
    assert r.level(140.5, Direction.HIGH) is Severity.CRITICAL
    assert not r.inside(97, Direction.HIGH)
    assert r.inside(95, Direction.HIGH)
    assert r.directions == (Direction.HIGH,)


def test_only_critical_limits_mean_every_breach_is_critical() -> None:
    r = requirement(critical_low=85)
    assert r.level(84, Direction.LOW) is Severity.CRITICAL
    assert r.inside(85, Direction.LOW)


def test_k_of_n_counts_only_the_last_n() -> None:
    r = requirement(warning_high=100, breach_k=2, breach_n=3)
    samples = window(105, 90, 90, 106)
    t = track(samples, r, Direction.HIGH)
    assert breach_at(t, samples, 3, r) is None  # 105 is four readings back
    samples = window(90, 105, 90, 106)
    t = track(samples, r, Direction.HIGH)
    found = breach_at(t, samples, 3, r)
    assert found is not None and found.rule is Rule.K_OF_N and found.positions == (1, 3)


def test_a_critical_reading_that_does_not_satisfy_k_of_n_at_critical_opens_at_warning() -> None:
    r = requirement(warning_high=100, critical_high=140, breach_k=2, breach_n=2)
    samples = window(110, 150)
    found = breach_at(track(samples, r, Direction.HIGH), samples, 1, r)
    assert found is not None and found.severity is Severity.WARNING


def test_sustained_needs_the_run_to_span_the_minutes() -> None:
    r = requirement(warning_high=100, sustained_minutes=30)
    samples = window(101, 102, 103, every=timedelta(minutes=15))
    t = track(samples, r, Direction.HIGH)
    assert breach_at(t, samples, 1, r) is None
    found = breach_at(t, samples, 2, r)
    assert found is not None and found.rule is Rule.SUSTAINED and found.positions == (0, 1, 2)


def test_clear_by_quiet_time_counts_from_the_first_inside_reading_after_the_episode() -> None:
    r = requirement(warning_high=100, clear_minutes=60)
    samples = window(110, 90, 91, every=timedelta(minutes=20))
    t = track(samples, r, Direction.HIGH)
    opened = samples[0].measured_at
    assert not clears_at(t, samples, 2, r, opened, samples[2].measured_at)
    assert clears_at(t, samples, 2, r, opened, samples[1].measured_at + timedelta(minutes=60))


def test_trend_window_is_inclusive_and_slides() -> None:
    r = requirement(vital_type="body_weight", trend_window_hours=48, trend_delta=2.0)
    samples = window(80.0, 81.0, 82.0, 81.5, every=timedelta(hours=24))
    t = track(samples, r, Direction.RISE)
    assert [t.amount(i) for i in range(4)] == [0.0, 1.0, 2.0, 0.5]
    assert t.level(2) is Severity.WARNING
