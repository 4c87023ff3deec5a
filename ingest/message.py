"""The readings message: validated strictly at the boundary (pydantic), then frozen dataclasses inside."""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ingest.rejection import Rejection, RejectionReason

MESSAGE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_READINGS = 500

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


class _ReadingModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    type: str
    value: int | float
    unit: str
    measured_at: str


class _MessageModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    message_id: Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]
    readings: Annotated[list[_ReadingModel], Field(min_length=1, max_length=MAX_READINGS)]
    sent_at: str | None = None
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ReadingInput:
    """One reading as the device sent it; `value` is a JSON number (int or float), not yet checked."""

    type: str
    value: int | float
    unit: str
    measured_at: str


@dataclass(frozen=True, slots=True)
class Message:
    """A structurally valid readings message.

    Attributes:
        message_id: the device's id for the message (a retry reuses it).
        readings: 1-500 readings, in the order sent.
        metadata: JSON text for `vital_readings.metadata`: `{"meta": {...}, "sent_at": "..."}`, keys when present.
    """

    message_id: str
    readings: tuple[ReadingInput, ...]
    sent_at: datetime | None
    metadata: str


def parse_timestamp(text: str) -> datetime | None:
    """An RFC 3339 timestamp with an explicit offset, or None (naive, other ISO 8601 forms, invalid dates)."""
    if not _RFC3339.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def validate_message(obj: dict[str, Any], *, max_meta_bytes: int) -> Message | Rejection:
    """Checks a decoded JSON object against the wire contract; returns the message or its message-level refusal."""
    plain = _plainly_valid(obj)
    if plain is None:
        return validate_with_model(obj, max_meta_bytes=max_meta_bytes)
    message_id, readings, sent_text, meta = plain
    return _message(message_id, readings, sent_text, meta, max_meta_bytes)


def validate_with_model(obj: dict[str, Any], *, max_meta_bytes: int) -> Message | Rejection:
    """`validate_message` through the pydantic model only: the authority on what is valid and on why not."""
    try:
        model = _MessageModel.model_validate(obj)
    except ValidationError as exc:
        return _refusal(exc)
    for name in ("sent_at", "meta"):
        if name in obj and obj[name] is None:
            return Rejection(RejectionReason.INVALID_MESSAGE, f"{name}: null is not allowed; omit the field")
    readings = tuple(ReadingInput(r.type, r.value, r.unit, r.measured_at) for r in model.readings)
    return _message(model.message_id, readings, model.sent_at, model.meta, max_meta_bytes)


def _message(
    message_id: str,
    readings: tuple[ReadingInput, ...],
    sent_text: str | None,
    meta: dict[str, Any] | None,
    max_meta_bytes: int,
) -> Message | Rejection:
    sent_at = None
    if sent_text is not None:
        sent_at = parse_timestamp(sent_text)
        if sent_at is None:
            return Rejection(RejectionReason.INVALID_MESSAGE, "sent_at: not RFC 3339 with an offset")
    parts: list[str] = []
    if meta is not None:
        meta_text = _meta_text(meta, max_meta_bytes)
        if isinstance(meta_text, Rejection):
            return meta_text
        parts.append(f'"meta":{meta_text}')
    if sent_at is not None:
        parts.append(f'"sent_at":"{sent_at.isoformat()}"')
    return Message(message_id=message_id, readings=readings, sent_at=sent_at, metadata="{" + ",".join(parts) + "}")


_MESSAGE_KEYS = frozenset(("message_id", "readings", "sent_at", "meta"))
_READING_KEYS = frozenset(("type", "value", "unit", "measured_at"))
_MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN[1:-1])  # used with fullmatch: re's `$` also matches before a "\n"


def _plainly_valid(
    obj: dict[str, Any],
) -> tuple[str, tuple[ReadingInput, ...], str | None, dict[str, Any] | None] | None:
    """The fields of a message that the model would accept as it is, or None when anything is unusual.

    The common, valid message skips building pydantic models (the largest cost of parsing it). Whatever this does
    not accept goes through the model, which decides and explains. Strings must be ASCII here only to stay on
    ground the comparison covers plainly (tests/ingest/test_message.py compares both paths on hostile input)."""
    if not obj.keys() <= _MESSAGE_KEYS:
        return None
    message_id = obj.get("message_id")
    readings = obj.get("readings")
    if type(message_id) is not str or not _MESSAGE_ID.fullmatch(message_id):
        return None
    if type(readings) is not list or not 1 <= len(readings) <= MAX_READINGS:
        return None
    sent_text = obj.get("sent_at")
    if "sent_at" in obj and (type(sent_text) is not str or not sent_text.isascii()):
        return None
    meta = obj.get("meta")
    if "meta" in obj and (type(meta) is not dict or not all(type(k) is str and k.isascii() for k in meta)):
        return None
    out = []
    for reading in readings:
        if type(reading) is not dict or reading.keys() != _READING_KEYS:
            return None
        vital, value, unit, measured_at = reading["type"], reading["value"], reading["unit"], reading["measured_at"]
        if type(value) is not int and type(value) is not float:
            return None
        if type(vital) is not str or type(unit) is not str or type(measured_at) is not str:
            return None
        if not (vital.isascii() and unit.isascii() and measured_at.isascii()):
            return None
        out.append(ReadingInput(vital, value, unit, measured_at))
    return message_id, tuple(out), sent_text, meta


def _refusal(exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False, include_input=False)
    reasons = [_reason(e) for e in errors]
    # A structural fault outranks a bad id or count: the message is not one of ours at all.
    reason = RejectionReason.INVALID_MESSAGE if RejectionReason.INVALID_MESSAGE in reasons else reasons[0]
    first = next(e for e, r in zip(errors, reasons, strict=True) if r is reason)
    where = ".".join(str(p) for p in first["loc"]) or "message"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return Rejection(reason, f"{where}: {first['msg']}{more}")


def _reason(error: Any) -> RejectionReason:
    loc = error["loc"]
    if loc == ("message_id",) and error["type"] in {"string_pattern_mismatch", "string_too_short", "string_too_long"}:
        return RejectionReason.BAD_MESSAGE_ID
    if loc == ("readings",) and error["type"] in {"too_short", "too_long"}:
        return RejectionReason.BAD_READING_COUNT
    return RejectionReason.INVALID_MESSAGE


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# What `_ENCODER.encode` builds on every call, built once (two thirds of its cost for a small object). No circular
# reference check: meta comes from decoded JSON text, which cannot hold a cycle (deep nesting is a RecursionError).
_MAKE_ENCODER: Callable[..., Any] | None = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)
)


def _encode(meta: dict[str, Any]) -> str:
    return _ENCODER.encode(meta) if _C_ENCODE is None else "".join(_C_ENCODE(meta, 0))


def _meta_text(meta: dict[str, Any], limit: int) -> str | Rejection:
    """The meta object as compact JSON text that PostgreSQL's jsonb accepts (no NUL, no lone surrogates) and
    that fits the limit, or the refusal."""
    try:
        text = _encode(meta)
        size = len(text.encode("utf-8"))
    except RecursionError:
        return Rejection(RejectionReason.INVALID_MESSAGE, "meta: nested too deeply")
    except UnicodeEncodeError:
        return Rejection(RejectionReason.INVALID_MESSAGE, "meta: contains an unpaired surrogate")
    except ValueError:  # 1e999 decodes to infinity, which neither JSON text nor jsonb can hold
        return Rejection(RejectionReason.INVALID_MESSAGE, "meta: holds a number beyond a double")
    if "\\u0000" in text:
        return Rejection(RejectionReason.INVALID_MESSAGE, "meta: contains a NUL character")
    if size > limit:
        return Rejection(RejectionReason.INVALID_MESSAGE, f"meta: {size} bytes serialized, limit {limit}")
    return text
