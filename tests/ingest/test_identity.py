"""Deduplication by identity within a batch and against the recent-identity cache."""

from __future__ import annotations

import json
from datetime import timedelta

from ingest.admission import Envelope, Limits, Verdict, judge, parse_envelope
from ingest.directory import DeviceRecord
from ingest.identity import RecentIdentities, plan_batch
from ingest.rejection import RejectionReason
from tests.ingest.catalog import NOW, device, registry

UNITS = registry()
AT = (NOW - timedelta(minutes=1)).isoformat()


def verdict(record: DeviceRecord, *values: float, at: str = AT, message_id: str = "m") -> Verdict:
    readings = [{"type": "heart_rate", "value": v, "unit": "/min", "measured_at": at} for v in values]
    payload = json.dumps({"message_id": message_id, "readings": readings}).encode()
    env = Envelope(f"devices/{record.serial}/readings", payload, NOW)
    return judge(env, parse_envelope(env, Limits()), record, UNITS, Limits())


def test_first_occurrence_wins_within_a_batch() -> None:
    record = device()
    plan = plan_batch([verdict(record, 70), verdict(record, 70), verdict(record, 71)], RecentIdentities(10))
    assert [r.value for r in plan.rows] == [70]
    assert plan.row_verdicts == (0,)
    assert plan.duplicates == 1
    (conflict,) = plan.conflicts
    assert conflict.verdict_index == 2
    assert conflict.rejection.reason is RejectionReason.CONFLICTING_DUPLICATE
    assert conflict.rejection.reading_index == 0


def test_a_repeat_inside_one_message_is_a_duplicate() -> None:
    plan = plan_batch([verdict(device(), 70, 70, 72)], RecentIdentities(10))
    assert [r.reading_index for r in plan.rows] == [0]
    assert plan.duplicates == 1
    assert [c.rejection.reading_index for c in plan.conflicts] == [2]


def test_values_compare_after_rounding_to_the_type_precision() -> None:
    record = device()
    plan = plan_batch([verdict(record, 70), verdict(record, 70.2)], RecentIdentities(10))
    assert plan.duplicates == 1
    assert plan.conflicts == ()


def test_identities_differ_by_device_type_or_instant() -> None:
    a, b = device(), device()
    later = (NOW - timedelta(seconds=30)).isoformat()
    plan = plan_batch([verdict(a, 70), verdict(b, 70), verdict(a, 70, at=later)], RecentIdentities(10))
    assert len(plan.rows) == 3
    assert plan.duplicates == 0


def test_the_cache_settles_known_identities_without_the_database() -> None:
    record = device()
    recent = RecentIdentities(10)
    (row,) = plan_batch([verdict(record, 70)], recent).rows
    recent.remember(row.key, row.value)
    plan = plan_batch([verdict(record, 70), verdict(record, 75)], recent)
    assert plan.rows == ()
    assert plan.duplicates == 1
    assert [c.verdict_index for c in plan.conflicts] == [1]


def test_the_cache_is_bounded_oldest_first() -> None:
    recent = RecentIdentities(2)
    record = device()
    keys = [(record.id, 1, NOW + timedelta(seconds=i)) for i in range(3)]
    for key in keys:
        recent.remember(key, 1.0)
    assert len(recent) == 2
    assert recent.get(keys[0]) is None
    assert recent.get(keys[2]) == 1.0
    recent.remember(keys[1], 1.0)
    recent.remember((record.id, 2, NOW), 1.0)
    assert recent.get(keys[1]) == 1.0
    assert recent.get(keys[2]) is None


def test_a_zero_capacity_cache_remembers_nothing() -> None:
    recent = RecentIdentities(0)
    recent.remember((device().id, 1, NOW), 1.0)
    assert len(recent) == 0
