"""The notification as the delivery core sees it, and the closed sets mirrored by PostgreSQL enums."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

__all__ = ["Channel", "DeliveryStatus", "Notification", "Priority"]


class Priority(StrEnum):
    """PostgreSQL enum `notification_priority`; `rank` orders them."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}


class Channel(StrEnum):
    """PostgreSQL enum `notification_channel`. SMS exists in the schema but has no channel here yet."""

    IN_APP = "in_app"
    PUSH = "push"
    EMAIL = "email"
    SMS = "sms"
    WEBHOOK = "webhook"

    @property
    def interrupts(self) -> bool:
        """Whether it can wake somebody up (and so waits for the end of quiet hours unless critical)."""
        return self in (Channel.PUSH, Channel.EMAIL, Channel.SMS)


class DeliveryStatus(StrEnum):
    """PostgreSQL enum `delivery_status` (migration 0500): the state of one delivery of a notification."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Notification:
    """One `notifications` row (only what delivery needs)."""

    id: UUID
    organization_id: UUID
    recipient_user_id: UUID
    patient_id: UUID | None
    type: str
    priority: Priority
    channel: Channel
    title: str
    idempotency_key: str
    created_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
