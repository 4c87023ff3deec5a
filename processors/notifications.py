"""Notifications to the care team, one per recipient, each with an idempotency key derived from its cause."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from processors.adherence import Slot
from processors.alerts import AlertChange, ChangeKind, Direction, Severity

__all__ = [
    "Notification",
    "NotificationType",
    "Priority",
    "for_alert",
    "for_missed_check",
    "for_silent_device",
]

JsonScalar = str | int | float | bool | None


class NotificationType(StrEnum):
    """The values of PostgreSQL enum `notification_type` that the processors produce."""

    VITAL_ALERT = "vital_alert"
    VITAL_ALERT_CLEARED = "vital_alert_cleared"
    MISSED_MEASUREMENT = "missed_measurement"
    DEVICE_OFFLINE = "device_offline"


class Priority(StrEnum):
    """PostgreSQL enum `notification_priority`."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Notification:
    """A `notifications` row; `key` is its idempotency_key (UNIQUE), so a replay inserts nothing."""

    key: str
    organization_id: UUID
    recipient_user_id: UUID
    patient_id: UUID
    type: NotificationType
    priority: Priority
    title: str
    body: str
    payload: dict[str, JsonScalar]
    scheduled_for: datetime


_SEVERITY_PRIORITY = {Severity.WARNING: Priority.HIGH, Severity.CRITICAL: Priority.CRITICAL}
_WORDS = {
    Direction.LOW: "low",
    Direction.HIGH: "high",
    Direction.RISE: "rising",
    Direction.FALL: "falling",
}


def _label(vital_type: str) -> str:
    return vital_type.replace("_", " ")


def for_alert(
    change: AlertChange, unit: str, reading_id: UUID | None, recipients: Sequence[UUID]
) -> list[Notification]:
    """The page (or the low-priority all-clear) for one episode transition, to each recipient."""
    cleared = change.kind is ChangeKind.CLEARED
    kind = NotificationType.VITAL_ALERT_CLEARED if cleared else NotificationType.VITAL_ALERT
    priority = Priority.LOW if cleared else _SEVERITY_PRIORITY[change.severity]
    what = f"{_label(change.vital_type)} {_WORDS[change.direction]}"
    if cleared:
        title = f"Resolved: {what}"
        body = f"Back in range since {change.changed_at.isoformat()} (opened {change.opened_at.isoformat()})."
    else:
        title = f"{change.severity.value.capitalize()}: {what}"
        limit = "" if change.threshold is None else f" (limit {change.threshold:g} {unit})"
        body = f"{change.kind.value.capitalize()}: {change.value:g} {unit}{limit}, rule {change.rule.value}."
    payload: dict[str, JsonScalar] = {
        "alert_id": str(change.alert_id),
        "change": change.kind.value,
        "vital_type": change.vital_type,
        "direction": change.direction.value,
        "severity": change.severity.value,
        "value": change.value,
        "unit": unit,
        "threshold": change.threshold,
        "rule": change.rule.value,
        "requirement_id": str(change.requirement_id),
        "requirement_version": change.requirement_version,
        "reading_id": None if reading_id is None else str(reading_id),
        "at": change.changed_at.isoformat(),
    }
    return [
        Notification(
            key=f"{kind.value}:{change.alert_id}:{change.revision}:{user}",
            organization_id=change.organization_id,
            recipient_user_id=user,
            patient_id=change.patient_id,
            type=kind,
            priority=priority,
            title=title,
            body=body,
            payload=payload,
            scheduled_for=change.changed_at,
        )
        for user in recipients
    ]


def for_missed_check(
    organization_id: UUID, patient_id: UUID, slot: Slot, at: datetime, recipients: Sequence[UUID]
) -> list[Notification]:
    """A low-priority notice that an expected measurement did not come."""
    payload: dict[str, JsonScalar] = {
        "scheduled_event_id": str(slot.slot_id),
        "vital_type": slot.vital_type,
        "local_date": slot.local_date.isoformat(),
        "local_time": slot.local_time.strftime("%H:%M"),
        "timezone": slot.timezone,
        "window_start": slot.window_start.isoformat(),
        "window_end": slot.window_end.isoformat(),
        "expected_count": slot.expected_count,
        "requirement_id": str(slot.requirement_id),
        "requirement_version": slot.requirement_version,
    }
    when = "the day" if slot.quota else slot.local_time.strftime("%H:%M")
    return [
        Notification(
            key=f"{NotificationType.MISSED_MEASUREMENT.value}:{slot.key}:{user}",
            organization_id=organization_id,
            recipient_user_id=user,
            patient_id=patient_id,
            type=NotificationType.MISSED_MEASUREMENT,
            priority=Priority.LOW,
            title=f"Missed: {_label(slot.vital_type)} check",
            body=f"No {_label(slot.vital_type)} reading for {when} on {slot.local_date.isoformat()}.",
            payload=payload,
            scheduled_for=at,
        )
        for user in recipients
    ]


def for_silent_device(
    organization_id: UUID,
    patient_id: UUID,
    device_id: UUID,
    serial: str,
    silent_from: datetime,
    at: datetime,
    recipients: Sequence[UUID],
) -> list[Notification]:
    """A low-priority notice that an assigned device has sent nothing since `silent_from`."""
    payload: dict[str, JsonScalar] = {
        "device_id": str(device_id),
        "serial": serial,
        "silent_since": silent_from.isoformat(),
        "at": at.isoformat(),
    }
    return [
        Notification(
            key=f"{NotificationType.DEVICE_OFFLINE.value}:{device_id}:{silent_from.isoformat()}:{user}",
            organization_id=organization_id,
            recipient_user_id=user,
            patient_id=patient_id,
            type=NotificationType.DEVICE_OFFLINE,
            priority=Priority.LOW,
            title="Device silent",
            body=f"Device {serial} has sent no reading since {silent_from.isoformat()}.",
            payload=payload,
            scheduled_for=at,
        )
        for user in recipients
    ]
