from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from processors.delivery.errors import SignatureError
from processors.delivery.signing import sign, verify

SECRET = b"whsec-test-0123456789"
AT = datetime(2026, 4, 2, 10, 0, tzinfo=UTC)
BODY = b'{"id":"x","priority":"critical"}'


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    header = sign([SECRET], BODY, AT)
    t = int(AT.timestamp())
    expected = hmac.new(SECRET, f"{t}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={t},v1={expected}"
    assert verify(SECRET, BODY, header, AT) == t


def test_a_tampered_body_or_wrong_secret_is_refused() -> None:
    header = sign([SECRET], BODY, AT)
    with pytest.raises(SignatureError, match="mismatch"):
        verify(SECRET, BODY.replace(b"critical", b"low"), header, AT)
    with pytest.raises(SignatureError, match="mismatch"):
        verify(b"another secret", BODY, header, AT)


def test_a_changed_timestamp_breaks_the_signature() -> None:
    header = sign([SECRET], BODY, AT)
    t = int(AT.timestamp())
    forged = header.replace(f"t={t}", f"t={t + 60}")
    with pytest.raises(SignatureError, match="mismatch"):
        verify(SECRET, BODY, forged, AT + timedelta(seconds=60))


@pytest.mark.parametrize("skew", [timedelta(minutes=5, seconds=1), -timedelta(minutes=5, seconds=1)])
def test_outside_the_replay_window_is_refused(skew: timedelta) -> None:
    header = sign([SECRET], BODY, AT)
    with pytest.raises(SignatureError, match="replay window"):
        verify(SECRET, BODY, header, AT + skew)


def test_inside_the_replay_window_is_accepted() -> None:
    header = sign([SECRET], BODY, AT)
    assert verify(SECRET, BODY, header, AT + timedelta(minutes=5))
    assert verify(SECRET, BODY, header, AT + timedelta(minutes=1), tolerance=timedelta(minutes=2))


def test_rotation_signs_with_every_active_secret() -> None:
    old, new = b"old-secret", b"new-secret"
    header = sign([new, old], BODY, AT)
    assert header.count("v1=") == 2
    assert verify(old, BODY, header, AT)
    assert verify(new, BODY, header, AT)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("garbage", "malformed"),
        ("t=abc,v1=00", "malformed timestamp"),
        ("t=1775124000", "malformed"),
        ("v1=00", "malformed"),
    ],
)
def test_malformed_headers_are_refused(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify(SECRET, BODY, header, AT)


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        sign([], BODY, AT)
