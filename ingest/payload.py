"""Raw bytes to a JSON object: UTF-8, strict JSON (no duplicate keys, no NaN/Infinity), bounded size and depth."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ingest.rejection import Rejection, RejectionReason

_TOPIC = re.compile(r"^devices/([A-Za-z0-9._-]{3,64})/(readings|status)$")


class _DuplicateKeyError(ValueError):
    pass


class _ConstantError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Topic:
    """A device topic: `devices/{serial}/readings` or `devices/{serial}/status`."""

    serial: str
    kind: str


def parse_topic(topic: str) -> Topic | None:
    """The serial and kind of a device topic, or None when the topic is not one ingest understands."""
    match = _TOPIC.fullmatch(topic)
    return Topic(match.group(1), match.group(2)) if match else None


def claimed_serial(topic: str) -> str | None:
    """The second topic level, whatever it is, for the record of a refused message."""
    parts = topic.split("/")
    return parts[1][:64] if len(parts) >= 2 and parts[0] == "devices" and parts[1] else None


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)


def decode_payload(payload: bytes, *, max_bytes: int) -> dict[str, Any] | Rejection:
    """Decodes a message body into a JSON object, or returns the message-level refusal.

    Args:
        payload: the MQTT payload as received.
        max_bytes: the size limit; larger payloads are refused before any decoding.
    """
    if len(payload) > max_bytes:
        return Rejection(RejectionReason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, limit {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(RejectionReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}")
    try:
        value = _DECODER.decode(text)
    except _DuplicateKeyError as exc:
        return Rejection(RejectionReason.INVALID_JSON, str(exc))
    except _ConstantError as exc:
        return Rejection(RejectionReason.INVALID_JSON, str(exc))
    except json.JSONDecodeError as exc:
        return Rejection(RejectionReason.INVALID_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}")
    except RecursionError:
        return Rejection(RejectionReason.INVALID_JSON, "nested too deeply")
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        return Rejection(RejectionReason.INVALID_JSON, str(exc))
    if not isinstance(value, dict):
        return Rejection(RejectionReason.NOT_OBJECT, f"top level is a JSON {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
