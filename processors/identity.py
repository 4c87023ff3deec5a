"""Deterministic identities for everything the engine creates, so a replayed event yields the same rows.

Ids look like UUIDv7 (the 48-bit millisecond prefix comes from the moment the thing happened, so rows stay
time-ordered in indexes) but the remaining bits are a hash of what the row stands for instead of random bits.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from uuid import UUID

__all__ = ["stable_id"]


def stable_id(at: datetime, *parts: object) -> UUID:
    """A UUIDv7-shaped id: time prefix from `at`, the rest from SHA-256 of `parts` (joined as text)."""
    millis = int(at.timestamp() * 1000) & ((1 << 48) - 1)
    digest = int.from_bytes(hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()[:10], "big")
    rand_a = digest >> 68 & 0xFFF  # 12 bits
    rand_b = digest & ((1 << 62) - 1)  # 62 bits
    value = millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return UUID(int=value)
