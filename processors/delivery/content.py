"""What leaves the system on each channel: the minimum needed to get a clinician to open the app.

No message that leaves the platform (email, push, webhook) carries protected health information: no patient
name, MRN, date of birth, vital value, unit, threshold or free text from the notification's title and body.
They carry the priority, the kind of notification and opaque identifiers (notification, patient and alert ids)
that only an authenticated user of the app, or an integration with API credentials, can resolve. In-app
notifications are shown inside the authenticated app and are not rendered here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from processors.delivery.notification import Notification, Priority

__all__ = ["EmailContent", "PushContent", "email_content", "push_content", "webhook_body"]

_KIND = {
    "vital_alert": "vital sign alert",
    "vital_alert_cleared": "vital sign alert cleared",
    "missed_measurement": "missed measurement",
    "device_offline": "device offline",
    "care_plan": "care plan update",
    "message": "message",
    "system": "system notice",
}
# Payload keys that are opaque identifiers or closed-set labels, never values: safe to forward.
_FORWARDED_KEYS = ("alert_id", "change", "escalation_level", "severity", "retrospective")


def _kind(notification: Notification) -> str:
    return _KIND.get(notification.type, "notification")


def _headline(notification: Notification) -> str:
    escalated = notification.payload.get("escalation_level") is not None
    prefix = "Escalated " if escalated else ""
    if notification.priority is Priority.CRITICAL:
        return f"{prefix}CRITICAL {_kind(notification)}".strip()
    return f"{prefix}{notification.priority.value} priority {_kind(notification)}".strip().capitalize()


@dataclass(frozen=True, slots=True)
class EmailContent:
    subject: str
    text: str


@dataclass(frozen=True, slots=True)
class PushContent:
    title: str
    body: str
    data: dict[str, str]


def email_content(notification: Notification, app_url: str) -> EmailContent:
    """Subject and plain-text body of the email for `notification` (no PHI: see the module docstring)."""
    link = f"{app_url.rstrip('/')}/notifications/{notification.id}"
    text = (
        f"{_headline(notification)} for a patient in your care.\n\n"
        f"Sign in to view the details: {link}\n\n"
        "This message intentionally contains no patient information.\n"
    )
    return EmailContent(subject=f"[RPM] {_headline(notification)}", text=text)


def push_content(notification: Notification) -> PushContent:
    """Title, body and data of the push message for `notification` (no PHI)."""
    return PushContent(
        title=_headline(notification),
        body="Open the app to view the details.",
        data={"notification_id": str(notification.id), "type": notification.type, "priority": notification.priority},
    )


def webhook_body(notification: Notification) -> bytes:
    """The JSON body of the webhook request for `notification`: identical bytes on every attempt (no PHI)."""
    forwarded = {k: notification.payload[k] for k in _FORWARDED_KEYS if k in notification.payload}
    document = {
        "id": str(notification.id),
        "idempotency_key": notification.idempotency_key,
        "type": notification.type,
        "priority": notification.priority.value,
        "organization_id": str(notification.organization_id),
        "recipient_user_id": str(notification.recipient_user_id),
        "patient_id": None if notification.patient_id is None else str(notification.patient_id),
        "created_at": notification.created_at.isoformat(),
        "details": {k: v if isinstance(v, bool | int | None) else str(v) for k, v in forwarded.items()},
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
