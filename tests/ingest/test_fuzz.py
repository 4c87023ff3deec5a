"""Property tests of the pure core: whatever the bytes, judging a message never raises, every refusal carries a
reason of the right level and text PostgreSQL can store, and accepted readings are within the contract."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.admission import Envelope, Limits, judge, parse_envelope
from ingest.rejection import Rejection
from tests.ingest.catalog import NOW, device, registry

UNITS = registry()
LIMITS = Limits()
RECORD = device(serial="fuzz-0001")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
timestamps = (
    st.datetimes(
        min_value=(NOW - timedelta(days=40)).replace(tzinfo=None),
        max_value=(NOW + timedelta(days=1)).replace(tzinfo=None),
    ).map(lambda d: d.isoformat() + "Z")
    | st.text(max_size=30)
    | st.builds(
        lambda d, minutes: (
            d.isoformat() + f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        ),
        st.datetimes(),  # any year, with any offset: some have no UTC form at all
        st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    )
)
readings = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["heart_rate", "8867-4", "spo2", "systolic_bp", "diastolic_bp", "body_weight", "x"]),
        "value": st.integers(min_value=-(10**20), max_value=10**20) | st.floats(allow_nan=False) | st.text(max_size=3),
        "unit": st.sampled_from(["/min", "%", "mm[Hg]", "kg", "[lb_av]", "bpm"]),
        "measured_at": timestamps,
    },
    optional={"extra": json_values},
)
messages = st.fixed_dictionaries(
    {"message_id": st.text(max_size=70), "readings": st.lists(readings, max_size=6)},
    optional={"meta": json_values, "sent_at": timestamps, "other": json_values},
)


def check(payload: bytes) -> None:
    envelope = Envelope("devices/fuzz-0001/readings", payload, NOW)
    parsed = parse_envelope(envelope, LIMITS)
    verdict = judge(envelope, parsed, RECORD, UNITS, LIMITS)
    for rejection in verdict.rejections:
        assert isinstance(rejection, Rejection)
        assert rejection.reason.refuses_message == (rejection.reading_index is None)
        rejection.detail.encode("utf-8")
        assert "\x00" not in rejection.detail
    if any(r.reading_index is None for r in verdict.rejections):
        assert verdict.readings == ()
        assert len(verdict.rejections) == 1
    for reading in verdict.readings:
        vital = UNITS.by_id[reading.vital_type_id]
        assert math.isfinite(reading.value)
        assert vital.plausible_min <= reading.value <= vital.plausible_max
        assert NOW - LIMITS.max_age <= reading.measured_at <= NOW + LIMITS.max_future
        json.loads(reading.metadata)
        reading.metadata.encode("utf-8")
    refused = {r.reading_index for r in verdict.rejections}
    assert refused.isdisjoint({r.reading_index for r in verdict.readings})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_judged_without_raising(payload: bytes) -> None:
    check(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_message_shaped_json_is_judged_within_the_contract(message: dict[str, Any]) -> None:
    check(json.dumps(message).encode())


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_is_refused_or_judged(value: Any) -> None:
    check(json.dumps(value).encode())
