"""Property-based fuzzing of ingest's pure parser and validator (hypothesis, 11,000 generated messages in all).

- arbitrary bytes, arbitrary JSON documents and byte-level mutations of valid messages: never an exception, and
  every message is accounted for (one whole-message refusal, or each reading either accepted or refused once);
- readings corrupted in one known way each: refused with exactly that reason, while the valid readings around
  them are accepted with their canonical value.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.admission import Envelope, Limits, Verdict, judge, parse_envelope
from ingest.directory import DeviceRecord
from ingest.rejection import RejectionReason as R
from tests.ingest import catalog

LIMITS = Limits()
UNITS = catalog.registry()
NOW = catalog.NOW
DEVICE = catalog.device()
TOPIC = f"devices/{DEVICE.serial}/readings"
# Totals per test below: 4,000 + 2,000 + 2,000 + 3,000 = 11,000 generated messages.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KNOWN = {*UNITS.types}
# Valid readings avoid blood pressure, so no cross-field rule joins two independently drawn readings.
SAFE_TYPES = sorted({t.code for t in UNITS.types.values()} - {"systolic_bp", "diastolic_bp"})


def _ts(at: datetime, offset_minutes: int) -> str:
    return at.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()


def run(payload: bytes, device: DeviceRecord | None = DEVICE) -> Verdict:
    envelope = Envelope(TOPIC, payload, NOW)
    return judge(envelope, parse_envelope(envelope, LIMITS), device, UNITS, LIMITS)


def accounted(verdict: Verdict, payload: bytes) -> None:
    """One whole-message refusal and nothing accepted, or every reading accepted or refused exactly once."""
    whole = [r for r in verdict.rejections if r.reading_index is None]
    if whole:
        assert len(verdict.rejections) == 1 and whole[0].reason.refuses_message and verdict.readings == ()
        return
    count = len(json.loads(payload)["readings"])
    refused = {r.reading_index for r in verdict.rejections}
    accepted = {r.reading_index for r in verdict.readings}
    assert len(refused) == len(verdict.rejections)  # one refusal per reading
    assert not refused & accepted
    assert refused | accepted == set(range(count))
    for rejection in verdict.rejections:
        assert not rejection.reason.refuses_message
        assert "\x00" not in rejection.detail
        rejection.detail.encode("utf-8")


# --- no crash, everything accounted -------------------------------------------------------------------------------

# Values that have broken JSON consumers before, drawn cheaply (generation, not the code under test, dominates).
NASTY: list[Any] = [
    None, True, False, 0, -0.0, 1e308, -1e308, 5e-324, 10**400, -(10**400), 2**63, -(2**63) - 1, "", " ", "\u0000",
    "\ud800", "\udfff", "\ufeff", "\u202e", "NaN", "Infinity", "1e400", "72", "null", "true", "{}", "[]",
    "'; DROP TABLE vital_readings; --", "%s%n%x", "{0}", "${jndi:ldap://x/a}", "../../etc/passwd", "\n", "\x1b[2J",
    "2026-11-25T08:00:00", "2026-11-25", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", [], {}, [72], {"v": 72},
    [[[]]], {"type": "heart_rate"}, "x" * 300,
]  # fmt: skip
json_values = (
    st.sampled_from(NASTY)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=()), max_size=12)  # lone surrogates and NUL included
)


def _field_value(name: str) -> st.SearchStrategy[Any]:
    """Mostly plausible values for one field of a reading, often replaced by a hostile one."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "type": st.sampled_from(sorted(UNITS.types)),
        "value": st.floats(min_value=0, max_value=600) | st.integers(-10, 2000),
        "unit": st.sampled_from(sorted({u for t in UNITS.types.values() for u in t.units})),
        "measured_at": st.integers(-(10**10), 10**9).map(lambda s: _ts(NOW - timedelta(seconds=s), (s % 1681) - 840)),
    }
    return plausible[name] | json_values


readings = st.lists(
    st.fixed_dictionaries({k: _field_value(k) for k in ("type", "value", "unit", "measured_at")}),
    min_size=1,
    max_size=4,
)


@settings(FUZZ, max_examples=4000)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_crash_the_parser(payload: bytes) -> None:
    accounted(run(payload), payload)


@settings(FUZZ, max_examples=2000)
@given(
    readings,
    st.dictionaries(
        st.sampled_from(["message_id", "sent_at", "meta", "extra", "readings"]),
        json_values | st.dictionaries(st.text(max_size=4), json_values, max_size=3),
        max_size=3,
    ),
)
def test_arbitrary_documents_never_crash_the_validator(items: list[dict[str, Any]], fields: dict[str, Any]) -> None:
    body: dict[str, Any] = {"message_id": "fuzz-1", "readings": items, **fields}
    payload = json.dumps(body, allow_nan=False).encode()
    accounted(run(payload), payload)


def _valid_payload(n: int) -> bytes:
    at = (NOW - timedelta(minutes=3)).isoformat()
    body = {
        "message_id": "fuzz-2",
        "readings": [{"type": "heart_rate", "value": 60 + i, "unit": "/min", "measured_at": at} for i in range(n)],
        "sent_at": at,
        "meta": {"seq": 1, "firmware": "2.4.1"},
    }
    return json.dumps(body).encode()


@settings(FUZZ, max_examples=2000)
@given(
    st.integers(1, 4),
    st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10_000), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
)
def test_mutated_bytes_never_crash_the_parser(n: int, edits: list[tuple[str, int, int]]) -> None:
    data = bytearray(_valid_payload(n))
    for kind, position, byte in edits:
        at = position % (len(data) + 1)
        if kind == "insert":
            data.insert(at, byte)
        elif data and at < len(data):
            if kind == "flip":
                data[at] = byte
            else:
                del data[at]
    accounted(run(bytes(data)), bytes(data))


# --- each corruption earns its own reason --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drawn:
    reading: dict[str, Any]
    raw_value: str | None  # a JSON number token json.dumps cannot write (e.g. 1e400), spliced in
    expected: R | None  # None: accepted


def _offset(seconds: int) -> int:
    """A UTC offset in minutes (-14:00..+14:00) derived from a drawn number: one draw fewer per reading."""
    return seconds % 1681 - 840


# Strategies are built once: constructing them inside a draw costs more than the code under test.
_TYPES = st.sampled_from(SAFE_TYPES)
_UNITS = {code: st.sampled_from(sorted(UNITS.types[code].units)) for code in SAFE_TYPES}
_CANONICAL = {
    code: st.floats(
        min_value=t.plausible_min + (t.plausible_max - t.plausible_min) * 0.01,
        max_value=t.plausible_max - (t.plausible_max - t.plausible_min) * 0.01,
    )
    for code, t in ((code, UNITS.types[code]) for code in SAFE_TYPES)
}
_IMPLAUSIBLE = {
    code: st.floats(min_value=-1e300, max_value=t.plausible_min - 1)
    | st.floats(min_value=t.plausible_max + 1, max_value=1e300)
    for code, t in ((code, UNITS.types[code]) for code in SAFE_TYPES)
}


def _not_a_unit_of(code: str) -> Callable[[str], bool]:
    units = UNITS.types[code].units
    return lambda unit: unit not in units


_WRONG_UNIT = {code: st.text(max_size=20).filter(_not_a_unit_of(code)) for code in SAFE_TYPES}
_UNKNOWN_TYPE = st.text(max_size=40).filter(lambda t: t not in KNOWN)
_GARBAGE_TIME = st.text(alphabet=string.printable, max_size=30).filter(lambda s: "T" not in s)
_KINDS = st.sampled_from(["valid"] * 9 + ["type", "unit", "non_finite", "huge", "implausible", "naive", "garbage",
                          "future", "stale"])  # fmt: skip
_AGO = st.integers(1, 29 * 86400)
# Up to the edges of the datetime range: the local time must exist at every offset (-14:00..+14:00), its UTC form
# need not (ingest once crashed converting such timestamps to UTC).
_AHEAD = st.integers(
    int(LIMITS.max_future.total_seconds()) + 1, int((datetime(9999, 12, 31, 9, 59, tzinfo=UTC) - NOW).total_seconds())
)
_BACK = st.integers(
    int(LIMITS.max_age.total_seconds()) + 1, int((NOW - datetime(1, 1, 1, 14, tzinfo=UTC)).total_seconds())
)
_ANY_SECONDS = st.integers(-(10**9), 10**10)
_EXPONENT = st.integers(309, 100_000)
_SIGN = st.sampled_from([1, -1, 3, -7])


@st.composite
def drawn(draw: st.DrawFn) -> Drawn:
    """A valid reading (half the time) or one corrupted in one known way, with the refusal it must earn."""
    code = draw(_TYPES)
    vital = UNITS.types[code]
    unit = draw(_UNITS[code])
    conversion = vital.units[unit]
    ago = draw(_AGO)
    reading: dict[str, Any] = {
        "type": vital.loinc if ago % 2 else code,
        "value": draw(_CANONICAL[code]) / conversion.factor - conversion.pre_offset,
        "unit": unit,
        "measured_at": _ts(NOW - timedelta(seconds=ago), _offset(ago)),
    }
    kind = draw(_KINDS)
    if kind == "valid":
        return Drawn(reading, None, None)
    if kind == "type":
        return Drawn(dict(reading, type=draw(_UNKNOWN_TYPE)), None, R.UNKNOWN_TYPE)
    if kind == "unit":
        return Drawn(dict(reading, unit=draw(_WRONG_UNIT[code])), None, R.UNIT_MISMATCH)
    if kind == "non_finite":
        return Drawn(reading, f"{'-' if ago % 3 else ''}1e{draw(_EXPONENT)}", R.NON_FINITE)
    if kind == "huge":
        return Drawn(dict(reading, value=10 ** (309 + ago % 700) * draw(_SIGN)), None, R.OUT_OF_RANGE)
    if kind == "implausible":
        value = draw(_IMPLAUSIBLE[code])
        return Drawn(dict(reading, unit=vital.canonical_unit, value=value), None, R.IMPLAUSIBLE_VALUE)
    if kind == "naive":
        naive = (NOW - timedelta(seconds=draw(_ANY_SECONDS))).replace(tzinfo=None).isoformat()
        return Drawn(dict(reading, measured_at=naive), None, R.BAD_TIMESTAMP)
    if kind == "garbage":
        return Drawn(dict(reading, measured_at=draw(_GARBAGE_TIME)), None, R.BAD_TIMESTAMP)
    if kind == "future":
        ahead = draw(_AHEAD)
        return Drawn(dict(reading, measured_at=_ts(NOW + timedelta(seconds=ahead), _offset(ahead))), None,
                     R.FUTURE_TIMESTAMP)  # fmt: skip
    back = draw(_BACK)
    return Drawn(dict(reading, measured_at=_ts(NOW - timedelta(seconds=back), _offset(back))), None, R.STALE_TIMESTAMP)


def _payload(items: list[Drawn]) -> bytes:
    """The message, with number tokens json.dumps cannot write (1e400) spliced in place of placeholders."""
    body = [dict(d.reading, value=f"__raw_{i}__") if d.raw_value else d.reading for i, d in enumerate(items)]
    text = json.dumps({"message_id": "fuzz-3", "readings": body})
    for i, item in enumerate(items):
        if item.raw_value:
            text = text.replace(f'"__raw_{i}__"', item.raw_value)
    return text.encode()


@settings(FUZZ, max_examples=3000)
@given(st.lists(drawn(), min_size=1, max_size=5))
def test_each_corrupted_reading_is_refused_for_its_own_reason(items: list[Drawn]) -> None:
    payload = _payload(items)
    verdict = run(payload)
    assert [(r.reason, r.reading_index) for r in verdict.rejections] == [
        (d.expected, i) for i, d in enumerate(items) if d.expected is not None
    ]
    accepted = {r.reading_index: r for r in verdict.readings}
    assert set(accepted) == {i for i, d in enumerate(items) if d.expected is None}
    for i, reading in accepted.items():
        vital = UNITS.types[reading_type(items[i].reading["type"])]
        conversion = vital.units[items[i].reading["unit"]]
        expected = round(
            (items[i].reading["value"] + conversion.pre_offset) * conversion.factor, vital.decimal_precision
        )
        assert math.isclose(reading.value, expected, abs_tol=10**-vital.decimal_precision)
        assert vital.plausible_min <= reading.value <= vital.plausible_max


def reading_type(name: str) -> str:
    vital = UNITS.lookup(name)
    assert vital is not None
    return vital.code
