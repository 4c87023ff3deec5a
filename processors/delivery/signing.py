"""Webhook signatures: HMAC-SHA256 over the timestamp and the raw body, with a replay window.

Every webhook request carries

    X-RPM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>[,v1=<...>]
    Idempotency-Key: <the notification's idempotency key>

(one `v1` per active secret while a secret is being rotated). A receiver verifies with `verify`: the timestamp
must be within `tolerance` of its own clock (so a captured request cannot be replayed later) and one `v1` must
equal its own HMAC of the exact bytes received, compared in constant time. Because delivery is at least once, a
receiver also drops a request whose Idempotency-Key it has already processed (keep keys for longer than the
dispatcher's whole retry span). See docs/delivery.md for a verification example in other languages.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta

from processors.delivery.errors import SignatureError

__all__ = ["IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "sign", "verify"]

SIGNATURE_HEADER = "X-RPM-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE = timedelta(minutes=5)


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[bytes], body: bytes, at: datetime) -> str:
    """The `X-RPM-Signature` value for `body` sent at `at`, with one `v1` per secret (current first)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    timestamp = int(at.timestamp())
    return ",".join([f"t={timestamp}", *(f"v1={_mac(s, timestamp, body)}" for s in secrets)])


def verify(
    secret: bytes, body: bytes, header: str | None, now: datetime, tolerance: timedelta = DEFAULT_TOLERANCE
) -> int:
    """Checks a webhook request; returns its timestamp (unix seconds) or raises `SignatureError`.

    Args:
        secret: the endpoint's shared secret.
        body: the raw request body, byte for byte (verify before parsing JSON).
        header: the `X-RPM-Signature` header value, or None when it is missing.
        now: the receiver's clock (timezone-aware).
        tolerance: how far the signed timestamp may be from `now`, in either direction.
    """
    if not header:
        raise SignatureError("missing signature")
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed signature")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("malformed timestamp") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("malformed signature")
    if abs(now.timestamp() - timestamp) > tolerance.total_seconds():
        raise SignatureError("timestamp outside the replay window")
    expected = _mac(secret, timestamp, body)
    # Check every candidate so the time taken does not reveal which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("signature mismatch")
    return timestamp
