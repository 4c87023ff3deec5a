import json
from datetime import UTC, datetime, timedelta

import pytest

from device_simulators.load import LoadMessages, run_origin
from device_simulators.message import MAX_PAYLOAD_BYTES, Message, Reading, format_timestamp

ORIGIN = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("per_message", [1, 10, 500])
def test_load_payload_is_the_protocol_shape_with_meta_seq(per_message: int) -> None:
    messages = LoadMessages("run1", per_message, ORIGIN, seed=1)
    body = json.loads(messages.payload(7))
    assert set(body) == {"message_id", "readings", "meta"}
    assert body["message_id"] == "run1:7"
    assert body["meta"] == {"run": "run1", "seq": 7}
    assert len(body["readings"]) == per_message
    for k, r in enumerate(body["readings"]):
        assert set(r) == {"type", "value", "unit", "measured_at"}
        assert r["type"] == "heart_rate" and r["unit"] == "/min"
        assert isinstance(r["value"], int) and 55 <= r["value"] <= 99
        assert datetime.fromisoformat(r["measured_at"]) == messages.measured_at(7, k)
    assert len(messages.payload(7)) < MAX_PAYLOAD_BYTES


def test_identities_are_unique_across_messages_and_span_is_exact() -> None:
    messages = LoadMessages("r", 10, ORIGIN)
    stamps = [r["measured_at"] for seq in range(1, 301) for r in json.loads(messages.payload(seq))["readings"]]
    assert len(set(stamps)) == len(stamps) == 3000
    last = datetime.fromisoformat(stamps[-1])
    assert last < ORIGIN + messages.span(300)
    assert last - ORIGIN == timedelta(milliseconds=2999)


def test_load_values_are_deterministic_with_the_seed() -> None:
    assert LoadMessages("r", 5, ORIGIN, seed=3).payload(1) == LoadMessages("r", 5, ORIGIN, seed=3).payload(1)
    assert LoadMessages("r", 5, ORIGIN, seed=3).payload(1) != LoadMessages("r", 5, ORIGIN, seed=4).payload(1)


def test_fast_template_matches_the_generic_encoder() -> None:
    messages = LoadMessages("r", 3, ORIGIN, seed=9)
    fast = json.loads(messages.payload(2))
    generic = Message(
        message_id="r:2",
        readings=tuple(
            Reading("heart_rate", r["value"], "/min", messages.measured_at(2, k))
            for k, r in enumerate(fast["readings"])
        ),
        meta={"run": "r", "seq": 2},
    )
    assert json.loads(generic.encode()) == fast


def test_run_origin_is_whole_seconds_hours_before() -> None:
    now = datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC)
    assert run_origin(now) == datetime(2026, 11, 25, 0, 30, 15, tzinfo=UTC)


def test_timestamps_keep_the_offset_and_refuse_naive_times() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 11, 25, 8, 0, 55, 120000, tzinfo=ZoneInfo("Europe/Berlin"))
    assert format_timestamp(local) == "2026-11-25T08:00:55.120+01:00"
    assert format_timestamp(ORIGIN) == "2026-11-25T10:00:00.000Z"
    with pytest.raises(ValueError):
        format_timestamp(datetime(2026, 1, 1))
