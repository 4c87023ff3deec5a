from __future__ import annotations

from datetime import datetime, time
from uuid import uuid4
from zoneinfo import ZoneInfo

from processors.delivery.notification import Channel, Notification, Priority
from processors.delivery.plan import Endpoint, PlannedDelivery, Preferences, plan_deliveries
from processors.delivery.quiet_hours import QuietHours

NIGHT_IN_CHICAGO = datetime(2026, 1, 11, 3, 0, tzinfo=ZoneInfo("America/Chicago"))
MORNING = datetime(2026, 1, 11, 7, 0, tzinfo=ZoneInfo("America/Chicago"))
QUIET = QuietHours(time(22, 0), time(7, 0), "America/Chicago")


def notification(priority: Priority = Priority.HIGH, type_: str = "vital_alert") -> Notification:
    return Notification(
        id=uuid4(),
        organization_id=uuid4(),
        recipient_user_id=uuid4(),
        patient_id=uuid4(),
        type=type_,
        priority=priority,
        channel=Channel.IN_APP,
        title="t",
        idempotency_key=str(uuid4()),
        created_at=NIGHT_IN_CHICAGO,
    )


def test_in_app_only_without_preferences() -> None:
    n = notification()
    assert plan_deliveries(n, None, [], [], NIGHT_IN_CHICAGO) == [
        PlannedDelivery(Channel.IN_APP, n.recipient_user_id, NIGHT_IN_CHICAGO)
    ]


def test_preferred_channels_push_per_device_and_subscribed_webhooks() -> None:
    n = notification()
    phone, tablet = uuid4(), uuid4()
    wanted = Endpoint(uuid4(), frozenset({"vital_alert"}))
    other_type = Endpoint(uuid4(), frozenset({"device_offline"}))
    too_low = Endpoint(uuid4(), min_priority=Priority.CRITICAL)
    prefs = Preferences(frozenset({Channel.EMAIL, Channel.PUSH}))
    planned = plan_deliveries(n, prefs, [wanted, other_type, too_low], [phone, tablet], NIGHT_IN_CHICAGO)
    assert {(p.channel, p.target_id) for p in planned} == {
        (Channel.IN_APP, n.recipient_user_id),
        (Channel.EMAIL, n.recipient_user_id),
        (Channel.PUSH, phone),
        (Channel.PUSH, tablet),
        (Channel.WEBHOOK, wanted.id),
    }


def test_push_without_devices_is_skipped() -> None:
    planned = plan_deliveries(notification(), Preferences(frozenset({Channel.PUSH})), [], [], NIGHT_IN_CHICAGO)
    assert [p.channel for p in planned] == [Channel.IN_APP]


def test_quiet_hours_delay_interrupting_channels_unless_critical() -> None:
    prefs = Preferences(frozenset({Channel.EMAIL, Channel.PUSH}), QUIET)
    device = uuid4()
    high = {p.channel: p.not_before for p in plan_deliveries(notification(), prefs, [], [device], NIGHT_IN_CHICAGO)}
    assert high == {Channel.IN_APP: NIGHT_IN_CHICAGO, Channel.EMAIL: MORNING, Channel.PUSH: MORNING}
    critical = plan_deliveries(notification(Priority.CRITICAL), prefs, [], [device], NIGHT_IN_CHICAGO)
    assert {p.not_before for p in critical} == {NIGHT_IN_CHICAGO}


def test_a_recipient_cannot_subscribe_to_webhooks() -> None:
    planned = plan_deliveries(notification(), Preferences(frozenset({Channel.WEBHOOK})), [], [], NIGHT_IN_CHICAGO)
    assert [p.channel for p in planned] == [Channel.IN_APP]
