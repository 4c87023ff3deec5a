"""Compressed real time: a scenario's days moved onto the wall clock, values untouched."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from device_simulators.fault import FaultKind, FaultPlan, inject
from device_simulators.scenario import SCENARIOS, day_zero, run_scenario
from device_simulators.timeline import Timeline, compress

START = datetime(2026, 11, 2, 15, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def test_a_scenario_plays_in_the_given_duration_from_the_anchor_with_its_own_values() -> None:
    scenario = SCENARIOS["hypertensive_crisis"]
    _, clean = run_scenario(scenario, START, serial_prefix="TL", timezone="America/Chicago")
    first = day_zero(START, "America/Chicago").astimezone(UTC)
    timeline = Timeline.fitting(first, first + timedelta(days=scenario.days), NOW, timedelta(seconds=20))
    live = compress(clean, timeline)

    assert len(live) == len(clean)
    assert [e.seq for e in live] == [e.seq for e in clean]
    assert [e.send_at for e in live] == sorted(e.send_at for e in live)
    assert live[0].send_at >= NOW and live[-1].send_at <= NOW + timedelta(seconds=20)
    for before, after in zip(clean, live, strict=True):
        wire, moved = json.loads(before.payload), json.loads(after.payload)
        assert [(r["type"], r["value"], r["unit"]) for r in wire["readings"]] == [
            (r["type"], r["value"], r["unit"]) for r in moved["readings"]
        ]
        assert before.message is not None
        expected = [timeline.at(r.measured_at) for r in before.message.readings]
        measured = [datetime.fromisoformat(r["measured_at"]) for r in moved["readings"]]
        assert all(abs(m - e) < timedelta(milliseconds=1) for m, e in zip(measured, expected, strict=True))
        # Measured on the compressed clock, sent a moment later: it arrives as it happens.
        assert all(timedelta(0) <= after.send_at - m < timedelta(seconds=1) for m in measured)
        assert after.expected == before.expected and after.fault is None


def test_the_timeline_maps_scenario_time_linearly() -> None:
    timeline = Timeline(origin=START, anchor=NOW, factor=3600)
    assert timeline.at(START) == NOW
    assert timeline.at(START + timedelta(hours=2)) == NOW + timedelta(seconds=2)
    with pytest.raises(ValueError, match="runs forward"):
        Timeline(origin=START, anchor=NOW, factor=0)


def test_only_clean_streams_are_compressed() -> None:
    _, clean = run_scenario(SCENARIOS["fever"], START, serial_prefix="TL")
    faulty = inject(clean, FaultPlan(rates={FaultKind.DUPLICATE: 1.0}), seed=1).envelopes
    with pytest.raises(ValueError, match="clean streams only"):
        compress(faulty, Timeline(origin=START, anchor=NOW, factor=1000))
