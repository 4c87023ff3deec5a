"""Refusal outcomes: the stable reason codes (mirrored by the PostgreSQL enum `rejection_reason`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectionReason(StrEnum):
    """Why a message or one of its readings was refused. Values are the PostgreSQL enum's labels."""

    # the whole message
    BAD_TOPIC = "bad_topic"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    INVALID_MESSAGE = "invalid_message"
    BAD_MESSAGE_ID = "bad_message_id"
    BAD_READING_COUNT = "bad_reading_count"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"
    # one reading
    UNKNOWN_TYPE = "unknown_type"
    UNIT_MISMATCH = "unit_mismatch"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    IMPLAUSIBLE_VALUE = "implausible_value"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    UNASSIGNED_DEVICE = "unassigned_device"
    CROSS_FIELD = "cross_field"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"

    @property
    def refuses_message(self) -> bool:
        """True when this reason refuses the whole message rather than one reading."""
        return self in MESSAGE_REASONS


MESSAGE_REASONS = frozenset(
    {
        RejectionReason.BAD_TOPIC,
        RejectionReason.PAYLOAD_TOO_LARGE,
        RejectionReason.NOT_UTF8,
        RejectionReason.INVALID_JSON,
        RejectionReason.NOT_OBJECT,
        RejectionReason.INVALID_MESSAGE,
        RejectionReason.BAD_MESSAGE_ID,
        RejectionReason.BAD_READING_COUNT,
        RejectionReason.UNKNOWN_DEVICE,
        RejectionReason.REVOKED_DEVICE,
    }
)

_DETAIL_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refusal: a reason code, a human-readable detail, and the refused reading's index (None: whole message).

    `detail` never carries PHI values beyond what is needed to fix the cause, and is safe to store as text.
    """

    reason: RejectionReason
    detail: str
    reading_index: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", safe_text(self.detail))


def safe_text(text: str, limit: int = _DETAIL_LIMIT) -> str:
    """Text that PostgreSQL `text` accepts (no NUL, no lone surrogates), truncated to `limit` characters."""
    if not text.isprintable() or _has_surrogate(text):
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
