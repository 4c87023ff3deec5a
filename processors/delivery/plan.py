"""Which deliveries a notification gets: channels from the notification and the recipient's preferences,
one push per registered device, one webhook per subscribed endpoint; and when each may go out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from processors.delivery.notification import Channel, Notification, Priority
from processors.delivery.quiet_hours import QuietHours, release_at

__all__ = ["Endpoint", "PlannedDelivery", "Preferences", "plan_deliveries"]


@dataclass(frozen=True, slots=True)
class Preferences:
    """A recipient's `recipient_preferences` row: extra channels and quiet hours (in their zone)."""

    channels: frozenset[Channel] = frozenset()
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An active webhook endpoint of the organization and what it subscribes to (empty `types`: all)."""

    id: UUID
    types: frozenset[str] = frozenset()
    min_priority: Priority = Priority.LOW

    def wants(self, notification: Notification) -> bool:
        return (not self.types or notification.type in self.types) and (
            notification.priority.rank >= self.min_priority.rank
        )


@dataclass(frozen=True, slots=True, order=True)
class PlannedDelivery:
    """Deliver on `channel` to `target_id` (the user, a user device or an endpoint) not before `not_before`."""

    channel: Channel
    target_id: UUID
    not_before: datetime = field(compare=False)


def plan_deliveries(
    notification: Notification,
    preferences: Preferences | None,
    endpoints: Sequence[Endpoint],
    push_devices: Sequence[UUID],
    now: datetime,
) -> list[PlannedDelivery]:
    """The deliveries of `notification`, sorted; in-app always (it is the record the app shows).

    The notification's own channel and the recipient's preferred channels are used; push without a registered
    device is skipped; webhooks go to every active endpoint that subscribes to the type at that priority. Quiet
    hours delay interrupting channels (push, email, sms) unless the notification is critical.
    """
    prefs = preferences or Preferences()
    channels = {Channel.IN_APP, notification.channel, *prefs.channels}
    channels.discard(Channel.WEBHOOK)  # webhooks follow the organization's endpoints, not the recipient
    user = notification.recipient_user_id
    planned: list[PlannedDelivery] = []

    def add(channel: Channel, target: UUID) -> None:
        planned.append(
            PlannedDelivery(channel, target, release_at(prefs.quiet_hours, notification.priority, channel, now))
        )

    for channel in channels:
        if channel is Channel.PUSH:
            for device in push_devices:
                add(channel, device)
        else:
            add(channel, user)
    for endpoint in endpoints:
        if endpoint.wants(notification):
            add(Channel.WEBHOOK, endpoint.id)
    return sorted(planned)
