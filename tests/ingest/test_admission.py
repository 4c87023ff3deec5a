"""Judging a message: registry checks, reading-level refusals, conversion, attribution and cross-field rules."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from ingest.admission import Envelope, Limits, Parsed, Verdict, judge, new_reading_id, parse_envelope
from ingest.directory import Assignment, DeviceRecord
from ingest.rejection import Rejection, RejectionReason
from tests.ingest.catalog import NOW, device, registry

UNITS = registry()
LIMITS = Limits()


def ts(delta: timedelta = timedelta(0)) -> str:
    return (NOW + delta).isoformat()


def reading(type_: str = "heart_rate", value: Any = 71, unit: str = "/min", at: str | None = None) -> dict[str, Any]:
    return {"type": type_, "value": value, "unit": unit, "measured_at": at or ts(-timedelta(minutes=1))}


class Raw(float):
    """A number written into the JSON text as is, e.g. 1e999 (which decodes to infinity)."""

    def __new__(cls, text: str) -> Raw:
        value = super().__new__(cls, 0.0)
        value.text = text
        return value

    text: str


def _encode(obj: Any) -> str:
    if isinstance(obj, Raw):
        return obj.text
    if isinstance(obj, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_encode(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ",".join(_encode(v) for v in obj) + "]"
    return json.dumps(obj)


def envelope(*readings: dict[str, Any], serial: str = "cuff-0001", raw: bytes | None = None) -> Envelope:
    payload = raw if raw is not None else _encode({"message_id": "m-1", "readings": list(readings)}).encode()
    return Envelope(f"devices/{serial}/readings", payload, NOW)


def verdict(env: Envelope, record: DeviceRecord | None = None) -> Verdict:
    parsed = parse_envelope(env, LIMITS)
    if record is None and isinstance(parsed, Parsed):
        record = device(serial=parsed.serial)
    return judge(env, parsed, record, UNITS, LIMITS)


def reasons(v: Verdict) -> list[tuple[int | None, RejectionReason]]:
    return [(r.reading_index, r.reason) for r in v.rejections]


def test_a_good_reading_is_accepted_and_attributed() -> None:
    patient = uuid4()
    record = device(patient_id=patient)
    v = verdict(envelope(reading()), record)
    assert v.rejections == ()
    (r,) = v.readings
    assert (r.patient_id, r.device_id, r.organization_id) == (patient, record.id, record.organization_id)
    assert (r.vital_type_id, r.value, r.original_value, r.original_unit) == (1, 71.0, 71.0, "/min")
    assert r.measured_at == NOW - timedelta(minutes=1)
    assert (r.received_at, r.message_id, r.reading_index) == (NOW, "m-1", 0)
    assert r.id.version == 7


@pytest.mark.parametrize(
    ("sent", "expected_type", "expected_value"),
    [
        (reading("8867-4", 71, "{beats}/min"), 1, 71.0),
        (reading("2708-6", 97, "%"), 4, 97.0),
        (reading("body_temperature", 100.4, "[degF]"), 6, 38.0),
        (reading("body_weight", 180, "[lb_av]"), 7, 81.65),
        (reading("body_weight", 81650, "g"), 7, 81.65),
        (reading("blood_glucose", 5.5, "mmol/L"), 8, 99.0),
        (reading("body_temperature", 37.04, "Cel"), 6, 37.0),
    ],
)
def test_units_convert_to_canonical_rounded_to_precision(
    sent: dict[str, Any], expected_type: int, expected_value: float
) -> None:
    (r,) = verdict(envelope(sent)).readings
    assert (r.vital_type_id, r.value) == (expected_type, expected_value)
    assert r.original_value == sent["value"]
    assert r.original_unit == sent["unit"]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (reading("pulse"), RejectionReason.UNKNOWN_TYPE),
        (reading("0000-0"), RejectionReason.UNKNOWN_TYPE),
        (reading(unit="bpm"), RejectionReason.UNIT_MISMATCH),
        (reading("spo2", 97, "/min"), RejectionReason.UNIT_MISMATCH),
        (reading(value=Raw("1e999")), RejectionReason.NON_FINITE),
        (reading(value=Raw("-1e999")), RejectionReason.NON_FINITE),
        (reading(value=10**400), RejectionReason.OUT_OF_RANGE),
        (reading("blood_glucose", 1.7e308, "mmol/L"), RejectionReason.OUT_OF_RANGE),
        (reading(value=19), RejectionReason.IMPLAUSIBLE_VALUE),
        (reading(value=301), RejectionReason.IMPLAUSIBLE_VALUE),
        (reading(value=-71), RejectionReason.IMPLAUSIBLE_VALUE),
        (reading(at="2026-11-25T08:00:00"), RejectionReason.BAD_TIMESTAMP),
        (reading(at="yesterday"), RejectionReason.BAD_TIMESTAMP),
        (reading(at=ts(timedelta(minutes=5, seconds=1))), RejectionReason.FUTURE_TIMESTAMP),
        (reading(at=ts(-timedelta(days=30, seconds=1))), RejectionReason.STALE_TIMESTAMP),
        (reading(at="0001-01-01T00:00:00+14:00"), RejectionReason.STALE_TIMESTAMP),
        (reading(at="9999-12-31T23:59:59.999999-05:00"), RejectionReason.FUTURE_TIMESTAMP),
    ],
)
def test_reading_level_refusals_keep_the_good_readings(sent: dict[str, Any], expected: RejectionReason) -> None:
    v = verdict(envelope(reading("spo2", 97, "%"), sent, reading("respiratory_rate", 16, "/min")))
    assert reasons(v) == [(1, expected)]
    assert [r.reading_index for r in v.readings] == [0, 2]


def test_time_limits_are_inclusive_and_configurable() -> None:
    v = verdict(envelope(reading(at=ts(timedelta(minutes=5))), reading("spo2", 97, "%", ts(-timedelta(days=30)))))
    assert v.rejections == ()
    strict = Limits(max_future=timedelta(0), max_age=timedelta(hours=1))
    env = envelope(reading(at=ts(timedelta(seconds=1))), reading("spo2", 97, "%", ts(-timedelta(hours=2))))
    v = judge(env, parse_envelope(env, strict), device(), UNITS, strict)
    assert reasons(v) == [(0, RejectionReason.FUTURE_TIMESTAMP), (1, RejectionReason.STALE_TIMESTAMP)]


def test_attribution_follows_the_assignment_at_measured_at() -> None:
    first, second = uuid4(), uuid4()
    handover = NOW - timedelta(hours=1)
    record = device(
        assignments=(
            Assignment(first, NOW - timedelta(days=2), handover),
            Assignment(second, handover, None),
        )
    )
    v = verdict(
        envelope(
            reading(at=ts(-timedelta(hours=2))),
            reading(at=handover.isoformat()),
            reading(at=ts(-timedelta(days=3))),
        ),
        record,
    )
    assert [(r.reading_index, r.patient_id) for r in v.readings] == [(0, first), (1, second)]
    assert reasons(v) == [(2, RejectionReason.UNASSIGNED_DEVICE)]


def test_a_gap_between_assignments_refuses_readings_in_it() -> None:
    patient = uuid4()
    record = device(
        assignments=(
            Assignment(patient, NOW - timedelta(days=2), NOW - timedelta(days=1)),
            Assignment(patient, NOW - timedelta(hours=1), None),
        )
    )
    v = verdict(envelope(reading(at=ts(-timedelta(hours=12)))), record)
    assert reasons(v) == [(0, RejectionReason.UNASSIGNED_DEVICE)]


def test_unknown_and_revoked_devices_refuse_the_whole_message() -> None:
    env = envelope(reading())
    parsed = parse_envelope(env, LIMITS)
    unknown = judge(env, parsed, None, UNITS, LIMITS)
    assert reasons(unknown) == [(None, RejectionReason.UNKNOWN_DEVICE)]
    assert unknown.serial == "cuff-0001"
    assert unknown.message_id == "m-1"
    revoked = judge(env, parsed, device(revoked=True), UNITS, LIMITS)
    assert reasons(revoked) == [(None, RejectionReason.REVOKED_DEVICE)]
    assert revoked.readings == ()


def test_message_level_faults_come_through_with_the_raw_envelope() -> None:
    env = envelope(raw=b'{"message_id": "m", "readings": [], "x": NaN}')
    v = verdict(env)
    assert reasons(v) == [(None, RejectionReason.INVALID_JSON)]
    assert v.envelope is env


def test_a_status_or_foreign_topic_is_a_bad_readings_topic() -> None:
    env = Envelope("devices/cuff-0001/status", b"{}", NOW)
    assert isinstance(parse_envelope(env, LIMITS), Rejection)
    env = Envelope("devices/x/readings", b"{}", NOW)
    result = parse_envelope(env, LIMITS)
    assert isinstance(result, Rejection)
    assert result.reason is RejectionReason.BAD_TOPIC


def test_diastolic_at_or_above_systolic_refuses_both() -> None:
    at = ts(-timedelta(minutes=2))
    other = ts(-timedelta(minutes=3))
    v = verdict(
        envelope(
            reading("systolic_bp", 80, "mm[Hg]", at),
            reading("diastolic_bp", 80, "mm[Hg]", at),
            reading("heart_rate", 70, "/min", at),
            reading("systolic_bp", 120, "mm[Hg]", other),
            reading("diastolic_bp", 80, "mm[Hg]", other),
        )
    )
    assert reasons(v) == [(0, RejectionReason.CROSS_FIELD), (1, RejectionReason.CROSS_FIELD)]
    assert [r.reading_index for r in v.readings] == [2, 3, 4]


def test_cross_field_compares_instants_not_their_spelling() -> None:
    v = verdict(
        envelope(
            reading("8480-6", 90, "mm[Hg]", "2026-11-25T07:00:00Z"),
            reading("8462-4", 95, "mm[Hg]", "2026-11-25T08:00:00+01:00"),
        )
    )
    assert reasons(v) == [(0, RejectionReason.CROSS_FIELD), (1, RejectionReason.CROSS_FIELD)]


def test_pressures_at_different_instants_are_not_compared() -> None:
    v = verdict(
        envelope(
            reading("systolic_bp", 90, "mm[Hg]", ts(-timedelta(minutes=1))),
            reading("diastolic_bp", 95, "mm[Hg]", ts(-timedelta(minutes=2))),
        )
    )
    assert v.rejections == ()


def test_reading_ids_are_time_ordered_uuid7() -> None:
    a = new_reading_id(NOW)
    b = new_reading_id(NOW + timedelta(milliseconds=1))
    assert a.version == b.version == 7
    assert a.variant == b.variant == "specified in RFC 4122"
    assert a.int >> 80 == int(NOW.timestamp() * 1000)
    assert a < b
    assert isinstance(a, UUID)


def test_a_verdict_records_the_device_and_message(at: datetime = NOW) -> None:
    record = device()
    v = verdict(envelope(reading()), record)
    assert (v.device, v.serial, v.message_id, v.envelope.received_at) == (record, "cuff-0001", "m-1", at)


def test_reading_ids_are_ordinary_uuids() -> None:
    a = new_reading_id(NOW)
    same = UUID(str(a))
    assert a == same
    assert hash(a) == hash(same)
    assert a.is_safe is same.is_safe
    assert str(a) == str(same)
    assert {a: 1}[same] == 1
    assert a.bytes == same.bytes
