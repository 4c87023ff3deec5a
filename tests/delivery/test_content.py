from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import uuid4

from processors.delivery.content import email_content, push_content, webhook_body
from processors.delivery.notification import Channel, Notification, Priority

PHI = ("Jane", "Doe", "MRN-4471", "86.4", "SpO2", "1950-05-17", "value")


def notification(priority: Priority = Priority.CRITICAL, **payload: object) -> Notification:
    return Notification(
        id=uuid4(),
        organization_id=uuid4(),
        recipient_user_id=uuid4(),
        patient_id=uuid4(),
        type="vital_alert",
        priority=priority,
        channel=Channel.IN_APP,
        title="Jane Doe MRN-4471: SpO2 86.4 %",
        idempotency_key="alert:1:opened",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        payload={"value": 86.4, "unit": "%", "patient_name": "Jane Doe", "dob": "1950-05-17", **payload},
    )


def test_no_phi_leaves_on_any_channel() -> None:
    n = notification(alert_id=str(uuid4()), severity="critical")
    email = email_content(n, "https://rpm.example.test")
    push = push_content(n)
    body = webhook_body(n).decode()
    rendered = [email.subject, email.text, push.title, push.body, json.dumps(push.data), body]
    for text in rendered:
        for value in PHI:
            assert value not in text, (value, text)


def test_webhook_body_is_stable_and_carries_identifiers() -> None:
    alert_id = str(uuid4())
    n = notification(alert_id=alert_id, escalation_level=1)
    assert webhook_body(n) == webhook_body(n)
    document = json.loads(webhook_body(n))
    assert document["id"] == str(n.id)
    assert document["idempotency_key"] == n.idempotency_key
    assert document["patient_id"] == str(n.patient_id)
    assert document["details"] == {"alert_id": alert_id, "escalation_level": 1}


def test_headlines_say_priority_and_escalation() -> None:
    assert email_content(notification(), "https://x.test").subject == "[RPM] CRITICAL vital sign alert"
    assert push_content(notification(escalation_level=2)).title == "Escalated CRITICAL vital sign alert"
    assert push_content(notification(Priority.LOW)).title == "Low priority vital sign alert"
    n = notification()
    assert f"https://x.test/notifications/{n.id}" in email_content(n, "https://x.test/").text
