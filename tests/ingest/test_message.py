"""The readings message structure: strict types, no extra fields, id and count rules, bounded metadata."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import message as message_module
from ingest.message import Message, parse_timestamp, validate_message, validate_with_model
from ingest.rejection import Rejection, RejectionReason

READING = {"type": "heart_rate", "value": 71, "unit": "/min", "measured_at": "2026-11-25T08:00:55+01:00"}


def body(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"message_id": "cuff-0042:000123", "readings": [dict(READING)]}
    message.update(overrides)
    return {k: v for k, v in message.items() if v is not ...}


def outcome(obj: dict[str, Any], max_meta_bytes: int = 4096) -> Message | Rejection:
    return validate_message(obj, max_meta_bytes=max_meta_bytes)


def refusal(obj: dict[str, Any]) -> RejectionReason:
    result = outcome(obj)
    assert isinstance(result, Rejection), result
    assert result.reading_index is None
    return result.reason


def test_a_valid_message_becomes_a_frozen_dataclass() -> None:
    result = outcome(body(sent_at="2026-11-25T08:01:02.120+01:00", meta={"firmware": "2.4.1", "seq": 123}))
    assert isinstance(result, Message)
    assert result.message_id == "cuff-0042:000123"
    assert result.readings[0].type == "heart_rate"
    assert result.readings[0].value == 71
    assert json.loads(result.metadata) == {
        "meta": {"firmware": "2.4.1", "seq": 123},
        "sent_at": "2026-11-25T08:01:02.120000+01:00",
    }
    with pytest.raises(AttributeError):
        result.message_id = "other"  # type: ignore[misc]


def test_metadata_is_an_empty_object_without_meta_or_sent_at() -> None:
    result = outcome(body())
    assert isinstance(result, Message)
    assert result.metadata == "{}"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (body(message_id=...), RejectionReason.INVALID_MESSAGE),
        (body(readings=...), RejectionReason.INVALID_MESSAGE),
        (body(extra=1), RejectionReason.INVALID_MESSAGE),
        (body(message_id=123), RejectionReason.INVALID_MESSAGE),
        (body(readings={"0": READING}), RejectionReason.INVALID_MESSAGE),
        (body(readings=[{**READING, "value": "71"}]), RejectionReason.INVALID_MESSAGE),
        (body(readings=[{**READING, "value": True}]), RejectionReason.INVALID_MESSAGE),
        (body(readings=[{**READING, "value": None}]), RejectionReason.INVALID_MESSAGE),
        (body(readings=[{**READING, "extra": 1}]), RejectionReason.INVALID_MESSAGE),
        (body(readings=[{k: v for k, v in READING.items() if k != "unit"}]), RejectionReason.INVALID_MESSAGE),
        (body(readings=[{**READING, "measured_at": 1764057655}]), RejectionReason.INVALID_MESSAGE),
        (body(readings=[[1, 2]]), RejectionReason.INVALID_MESSAGE),
        (body(sent_at=None), RejectionReason.INVALID_MESSAGE),
        (body(sent_at="yesterday"), RejectionReason.INVALID_MESSAGE),
        (body(sent_at="2026-11-25T08:01:02"), RejectionReason.INVALID_MESSAGE),
        (body(meta=None), RejectionReason.INVALID_MESSAGE),
        (body(meta=[1]), RejectionReason.INVALID_MESSAGE),
        (body(meta={"x": "a\x00b"}), RejectionReason.INVALID_MESSAGE),
        (body(meta={"x": "\ud800"}), RejectionReason.INVALID_MESSAGE),
        (body(meta={"\x00": 1}), RejectionReason.INVALID_MESSAGE),
        (body(meta={"blob": "x" * 5000}), RejectionReason.INVALID_MESSAGE),
        (body(message_id=""), RejectionReason.BAD_MESSAGE_ID),
        (body(message_id="a" * 65), RejectionReason.BAD_MESSAGE_ID),
        (body(message_id="has space"), RejectionReason.BAD_MESSAGE_ID),
        (body(message_id="semi;colon"), RejectionReason.BAD_MESSAGE_ID),
        (body(message_id="ünï"), RejectionReason.BAD_MESSAGE_ID),
        (body(readings=[]), RejectionReason.BAD_READING_COUNT),
        (body(readings=[dict(READING)] * 501), RejectionReason.BAD_READING_COUNT),
    ],
)
def test_message_level_refusals(obj: dict[str, Any], expected: RejectionReason) -> None:
    assert refusal(obj) is expected


def test_a_structural_fault_outranks_a_bad_id() -> None:
    assert refusal(body(message_id="bad id", extra=True)) is RejectionReason.INVALID_MESSAGE


def test_limits_are_inclusive() -> None:
    assert isinstance(outcome(body(message_id="a" * 64, readings=[dict(READING)] * 500)), Message)
    meta = {"b": "x" * (4096 - len('{"b":""}'))}
    assert isinstance(outcome(body(meta=meta)), Message)
    assert isinstance(outcome(body(meta={"b": "x" * 4096})), Rejection)


def test_reading_values_stay_as_sent_for_reading_level_checks() -> None:
    result = outcome(body(readings=[{**READING, "value": 10**400}, {**READING, "value": float("inf")}]))
    assert isinstance(result, Message)
    assert result.readings[0].value == 10**400
    assert result.readings[1].value == float("inf")


@pytest.mark.parametrize(
    "text",
    ["2026-11-25T08:00:55Z", "2026-11-25T08:00:55.5+01:00", "2026-11-25T08:00:55.123456789-05:30"],
)
def test_rfc3339_with_offset_parses(text: str) -> None:
    parsed = parse_timestamp(text)
    assert parsed is not None
    assert parsed.utcoffset() is not None


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25T08:00:55",
        "2026-11-25 08:00:55Z",
        "2026-11-25",
        "20261125T080055Z",
        "2026-11-25T08:00:60Z",
        "2026-13-01T00:00:00Z",
        "2026-11-25T08:00:55+24:00",
        "2026-11-25T08:00:55+0100",
        "tomorrow",
        "",
    ],
)
def test_other_timestamps_do_not(text: str) -> None:
    assert parse_timestamp(text) is None


# The fast path (plain dict checks) must agree with the pydantic model on every input, valid or not.
_odd_strings = st.sampled_from(["", "\ud800", "a\x00b", "é", "x\n", "heart_rate", "/min", "2026-11-25T08:00:55Z"])
_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | _odd_strings
    | st.text(alphabet=st.characters(exclude_categories=()), max_size=6)
)
_fields = {
    "type": st.sampled_from(["heart_rate", "spo2"]) | _values,
    "value": st.integers() | st.floats() | _values,
    "unit": st.sampled_from(["/min", "%"]) | _values,
    "measured_at": st.sampled_from(["2026-11-25T08:00:55Z", "2026-11-25T08:00:55+01:00"]) | _values,
}
_readings = st.one_of(
    st.fixed_dictionaries(_fields),
    st.builds(
        lambda changes, dropped: {k: v for k, v in {**READING, **changes}.items() if k not in dropped},
        st.dictionaries(st.sampled_from([*READING, "extra"]), _values, max_size=2),
        st.sets(st.sampled_from(list(READING)), max_size=1),
    ),
    _values,
)
_meta = st.dictionaries(st.text(alphabet=st.characters(exclude_categories=()), max_size=4), _values, max_size=3)
_documents = st.fixed_dictionaries(
    {
        "message_id": st.sampled_from(["m-1", "a" * 64, "a" * 65, "bad id", "x\n", ""]) | _values,
        "readings": st.lists(_readings, max_size=4) | _values,
    },
    optional={"sent_at": _values | st.just("2026-11-25T08:00:55Z"), "meta": _meta | _values, "other": _values},
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(_documents, st.sampled_from([16, 4096]))
def test_the_fast_path_agrees_with_the_model(document: dict[str, Any], max_meta_bytes: int) -> None:
    fast = validate_message(document, max_meta_bytes=max_meta_bytes)
    model = validate_with_model(document, max_meta_bytes=max_meta_bytes)
    assert fast == model
    if isinstance(fast, Message) and isinstance(model, Message):
        assert [type(r.value) for r in fast.readings] == [type(r.value) for r in model.readings]


def test_the_fast_path_agrees_on_the_edges() -> None:
    edges = [
        body(),
        body(readings=[dict(READING)] * 500),
        body(readings=[dict(READING)] * 501),
        body(readings=[]),
        body(readings=[{**READING, "value": True}]),
        body(readings=[{**READING, "value": 10**400}]),
        body(readings=[{**READING, "unit": "\ud800"}]),
        body(message_id="x\n"),
        body(sent_at=None),
        body(meta=None),
        body(meta={"\ud800": 1}),
        body(meta={"k": "\ud800"}),
        body(sent_at="2026-11-25T08:00:55Z", meta={"run": "r", "seq": 1}),
    ]
    for document in edges:
        assert validate_message(document, max_meta_bytes=4096) == validate_with_model(document, max_meta_bytes=4096)


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_a_number_beyond_a_double_in_meta_is_refused_not_raised(number: str) -> None:
    document = json.loads(json.dumps(body(meta={"battery": "X"})).replace('"X"', number))
    result = outcome(document)
    assert isinstance(result, Rejection)
    assert result.reason is RejectionReason.INVALID_MESSAGE
    assert result.detail == "meta: holds a number beyond a double"


def _encoded(encode: Callable[[dict[str, Any]], str], meta: dict[str, Any]) -> str:
    try:
        return encode(meta)
    except ValueError as exc:  # infinity, or a surrogate at UTF-8 time (not here: both keep the str)
        return f"refused: {type(exc).__name__}"


@settings(max_examples=500)
@given(st.dictionaries(st.text(alphabet=st.characters(exclude_categories=()), max_size=4), _values, max_size=4))
def test_meta_is_encoded_as_the_json_module_encodes_it(meta: dict[str, Any]) -> None:
    reference = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    assert _encoded(message_module._encode, meta) == _encoded(reference, meta)
