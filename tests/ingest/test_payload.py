"""Bytes to a JSON object: strict JSON, UTF-8, size limit; every fault is a message-level refusal."""

from __future__ import annotations

import pytest

from ingest.payload import claimed_serial, decode_payload, parse_topic
from ingest.rejection import Rejection, RejectionReason

LIMIT = 64 * 1024


def reason(payload: bytes, limit: int = LIMIT) -> RejectionReason | None:
    result = decode_payload(payload, max_bytes=limit)
    return result.reason if isinstance(result, Rejection) else None


def test_a_json_object_decodes() -> None:
    assert decode_payload(b'{"a": [1, 2.5, "x", null, true]}', max_bytes=LIMIT) == {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\xff\xfe{}", RejectionReason.NOT_UTF8),
        (b'{"a": "\xed\xa0\x80"}', RejectionReason.NOT_UTF8),  # an encoded surrogate is not UTF-8
        (b"", RejectionReason.INVALID_JSON),
        (b"{", RejectionReason.INVALID_JSON),
        (b'{"a": 1,}', RejectionReason.INVALID_JSON),
        (b"{'a': 1}", RejectionReason.INVALID_JSON),
        (b'{"a": NaN}', RejectionReason.INVALID_JSON),
        (b'{"a": Infinity}', RejectionReason.INVALID_JSON),
        (b'{"a": -Infinity}', RejectionReason.INVALID_JSON),
        (b'{"a": 1, "a": 2}', RejectionReason.INVALID_JSON),
        (b'{"x": {"b": 1, "b": 1}}', RejectionReason.INVALID_JSON),
        (b'{"a": 1} {"b": 2}', RejectionReason.INVALID_JSON),
        (b"[" * 5000 + b"]" * 5000, RejectionReason.INVALID_JSON),
        (b'{"a": ' + b"9" * 5000 + b"}", RejectionReason.INVALID_JSON),
        (b"[1, 2]", RejectionReason.NOT_OBJECT),
        (b'"text"', RejectionReason.NOT_OBJECT),
        (b"null", RejectionReason.NOT_OBJECT),
        (b"42", RejectionReason.NOT_OBJECT),
    ],
)
def test_refusals(payload: bytes, expected: RejectionReason) -> None:
    assert reason(payload) is expected


def test_the_size_limit_is_checked_before_decoding() -> None:
    assert reason(b"\xff" * 101, limit=100) is RejectionReason.PAYLOAD_TOO_LARGE
    assert reason(b"{}" + b" " * 98, limit=100) is None


def test_details_are_storable_text() -> None:
    result = decode_payload(b'{"\\u0000": 1, "\\u0000": 2}', max_bytes=LIMIT)
    assert isinstance(result, Rejection)
    assert "\x00" not in result.detail
    result = decode_payload(b'{"\\ud800": 1, "\\ud800": 2}', max_bytes=LIMIT)
    assert isinstance(result, Rejection)
    result.detail.encode("utf-8")


@pytest.mark.parametrize(
    ("topic", "serial", "kind"),
    [
        ("devices/cuff-1/readings", "cuff-1", "readings"),
        ("devices/a.b_c-D9/status", "a.b_c-D9", "status"),
    ],
)
def test_device_topics(topic: str, serial: str, kind: str) -> None:
    parsed = parse_topic(topic)
    assert parsed is not None
    assert (parsed.serial, parsed.kind) == (serial, kind)


@pytest.mark.parametrize(
    "topic", ["devices/ab/readings", "devices/cuff 1/readings", "devices/x1y/other", "other/x1y/readings", "devices"]
)
def test_other_topics_are_not_device_topics(topic: str) -> None:
    assert parse_topic(topic) is None


def test_claimed_serial_is_kept_for_the_record() -> None:
    assert claimed_serial("devices/ab/readings") == "ab"
    assert claimed_serial("elsewhere/ab") is None
