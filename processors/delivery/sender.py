"""A claimed delivery (`Job`), where it goes (`Target`), and the `Sender` protocol every channel implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from processors.delivery.notification import Channel, Notification

__all__ = ["EmailTarget", "InAppTarget", "Job", "PushTarget", "Sender", "Target", "WebhookTarget"]


@dataclass(frozen=True, slots=True)
class InAppTarget:
    user_id: UUID


@dataclass(frozen=True, slots=True)
class EmailTarget:
    address: str


@dataclass(frozen=True, slots=True)
class PushTarget:
    device_id: UUID
    platform: str
    token: str


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    endpoint_id: UUID
    url: str
    # Current secret first; a previous one while a rotation is in progress.
    secrets: tuple[bytes, ...]


Target = InAppTarget | EmailTarget | PushTarget | WebhookTarget


@dataclass(frozen=True, slots=True)
class Job:
    """Attempt number `attempt` of delivery `delivery_id`, claimed until `lease_expires_at`.

    `target` is None when what it pointed at is gone (endpoint disabled, device unregistered): the delivery dies.
    """

    delivery_id: UUID
    attempt: int
    channel: Channel
    target_id: UUID
    target: Target | None
    notification: Notification
    lease_expires_at: datetime


class Sender(Protocol):
    """Delivers one job; returns the receiver's response code (if any) or raises `ChannelError`."""

    async def send(self, job: Job) -> int | None: ...
