"""`endpoints enable` and `endpoints update` end to end: the app role in the admin's tenant, the SSRF guard when an
endpoint is enabled again or its URL changes, the real dispatcher picking the change up at the next attempt, the
secret left alone, and the audit trail (before/after, secrets redacted, nothing written for a no-op)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from processors.delivery.endpoints import (
    CheckedUrl,
    Endpoint,
    EndpointChangedError,
    EndpointEdit,
    EndpointSettings,
    changes,
    enable_endpoint,
)
from processors.delivery.notification import Priority
from processors.delivery.signing import SIGNATURE_HEADER, verify
from processors.lifecycle import connect
from tests import factories
from tests.delivery.conftest import FakeClock, MakeDispatcher, add_endpoint, add_notification, audit, cli, email
from tests.delivery.receivers import HttpReceiver

Conn = psycopg.Connection[Any]
Team = tuple[factories.Patient, dict[str, factories.Provider]]
# Past RETRY's capped backoff (5 min) with its jitter: a failed first attempt is due again.
PAST_BACKOFF = timedelta(minutes=6)


def changes_audited(db: Conn, endpoint_id: UUID) -> list[tuple[UUID, list[str], Any, Any]]:
    """The endpoint's update audit rows: (actor, changed columns, before, after)."""
    rows = db.execute(
        "SELECT actor_user_id, details -> 'changed', before, after FROM audit_logs"
        " WHERE entity_type = 'webhook_endpoints' AND entity_id = %s AND action = 'webhook_endpoints.update'"
        " ORDER BY occurred_at",
        (endpoint_id,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def stored(db: Conn, endpoint_id: str) -> tuple[Any, ...]:
    row = db.execute(
        "SELECT name, url, notification_types::text[], min_priority::text, is_active, secret, updated_at"
        " FROM webhook_endpoints WHERE id = %s",
        (endpoint_id,),
    ).fetchone()
    assert row is not None
    return tuple(row)


def webhook_statuses(db: Conn, notification_id: UUID) -> list[tuple[str, str | None]]:
    rows = db.execute(
        "SELECT status::text, last_error FROM notification_deliveries"
        " WHERE notification_id = %s AND channel = 'webhook'",
        (notification_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_changes_are_the_fields_that_differ() -> None:
    now = datetime(2026, 1, 11, tzinfo=UTC)
    current = Endpoint(uuid4(), "pager", "https://a.example/h", ("vital_alert", "message"), "low", True, None, now, now)
    assert changes(current, EndpointEdit()) == {}
    same = EndpointEdit(
        name="pager",
        url=CheckedUrl("https://a.example/h", ()),
        notification_types=("message", "vital_alert"),  # another order is the same set
        min_priority=Priority.LOW,
    )
    assert changes(current, same) == {}
    assert changes(current, EndpointEdit(name="ward 7", min_priority=Priority.HIGH)) == {
        "name": "ward 7",
        "min_priority": "high",
    }
    assert changes(current, EndpointEdit(url=CheckedUrl("https://b.example/h", ("192.0.2.1",)))) == {
        "url": "https://b.example/h"
    }
    assert changes(current, EndpointEdit(notification_types=())) == {"notification_types": []}
    # A repeated type goes to the database, which refuses it as it does for `add`.
    assert changes(current, EndpointEdit(notification_types=("message", "vital_alert", "message"))) == {
        "notification_types": ["message", "vital_alert", "message"]
    }


@pytest.mark.usefixtures("allow_private")
async def test_an_enabled_endpoint_is_delivered_to_again(
    db: Conn,
    care_team: Team,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    make_dispatcher: MakeDispatcher,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patient, team = care_team
    admin_id, admin_email = admin
    added = await add_endpoint(capsys, receiver.url + "/hook", admin_email)
    endpoint = added["id"]
    receiver.secret = added["secret"].encode()

    # A delivery whose first attempt failed waits for its retry while the endpoint is disabled and enabled again.
    receiver.statuses = [503]
    waiting, waiting_key = add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 2
    assert webhook_statuses(db, waiting) == [("pending", "http_503")]

    code, _, err = await cli(capsys, "disable", endpoint, "--as", admin_email)
    assert code == 0, err
    missed, _ = add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 1  # in-app only: nothing is planned for a disabled endpoint

    code, out, err = await cli(capsys, "enable", endpoint, "--as", admin_email)
    assert code == 0, err
    assert f"{endpoint}  active" in out and "is_active: False -> True" in out

    clock.advance(PAST_BACKOFF)
    _, new_key = add_notification(db, patient, team["nurse"].user_id, scheduled_for=clock())
    assert await make_dispatcher().run_once() == 3  # the waiting retry, and the new notification's in-app + webhook
    assert sorted(receiver.processed) == sorted([waiting_key, new_key]) and receiver.refused == []
    assert webhook_statuses(db, waiting) == [("sent", None)]
    assert webhook_statuses(db, missed) == []  # notifications made while it was disabled are not sent late

    [*_, (actor, changed, before, after)] = changes_audited(db, UUID(endpoint))
    assert (actor, changed) == (admin_id, ["is_active", "updated_at"])
    assert (before["is_active"], after["is_active"]) == (False, True)
    assert before["secret"] == after["secret"] == "[redacted]"

    # Enabling an enabled endpoint says so and writes nothing.
    rows = len(audit(db, UUID(endpoint)))
    updated_at = stored(db, endpoint)[-1]
    code, out, err = await cli(capsys, "enable", endpoint, "--as", admin_email, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["is_active"] is True and shown["changed"] == {}
    code, out, err = await cli(capsys, "enable", endpoint, "--as", admin_email)
    assert code == 0 and "already enabled: nothing changed" in out
    assert len(audit(db, UUID(endpoint))) == rows and stored(db, endpoint)[-1] == updated_at


async def test_enabling_vets_the_url_again_and_names_the_rule(
    db: Conn,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DELIVERY_WEBHOOK_ALLOW_PRIVATE", "true")
    added = await add_endpoint(capsys, receiver.url + "/hook", admin[1])
    endpoint = added["id"]
    code, _, err = await cli(capsys, "disable", endpoint, "--as", admin[1])
    assert code == 0, err
    rows = len(audit(db, UUID(endpoint)))

    # The deployment no longer allows private targets: the stored loopback URL is refused now.
    monkeypatch.setenv("DELIVERY_WEBHOOK_ALLOW_PRIVATE", "false")
    code, out, err = await cli(capsys, "enable", endpoint, "--as", admin[1])
    assert code == 1 and out == ""
    assert f"refused {receiver.url}/hook: rule address_loopback" in err and "DELIVERY_WEBHOOK_ALLOW_PRIVATE" in err
    assert stored(db, endpoint)[4] is False and len(audit(db, UUID(endpoint))) == rows


@pytest.mark.usefixtures("allow_private")
async def test_enabling_refuses_a_url_changed_since_it_was_vetted(
    db: Conn, admin: tuple[UUID, str], receiver: HttpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    added = await add_endpoint(capsys, receiver.url + "/hook", admin[1])
    code, _, err = await cli(capsys, "disable", added["id"], "--as", admin[1])
    assert code == 0, err
    # The CLI vetted the URL it read; another admin's update replaced it before the enable ran.
    vetted = CheckedUrl(receiver.url + "/old-hook", ("127.0.0.1",))
    with connect(EndpointSettings()) as conn, pytest.raises(EndpointChangedError, match="try again"):
        enable_endpoint(conn, admin[1], UUID(added["id"]), vetted)
    assert stored(db, added["id"])[4] is False


@pytest.mark.usefixtures("allow_private")
async def test_an_updated_url_is_used_for_the_next_attempt_with_the_same_secret(
    db: Conn,
    care_team: Team,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    make_dispatcher: MakeDispatcher,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patient, team = care_team
    admin_id, admin_email = admin
    added = await add_endpoint(capsys, receiver.url + "/hook", admin_email)
    endpoint, secret = added["id"], added["secret"]
    receiver.secret = secret.encode()
    secret_before = stored(db, endpoint)[5]

    receiver.statuses = [503]
    notification, key = add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 2
    assert [r.path for r in receiver.requests] == ["/hook"]

    new_url = receiver.url + "/hook-ward-7"
    code, out, err = await cli(
        capsys, "update", endpoint, "--url", new_url, "--name", "ward 7 pager", "--as", admin_email, "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["changed"] == {
        "name": {"before": "pager", "after": "ward 7 pager"},
        "url": {"before": receiver.url + "/hook", "after": new_url},
    }
    assert shown["url"] == new_url and "secret" not in shown and secret not in out
    assert stored(db, endpoint)[5] == secret_before  # the secret is rotate-secret's, not update's

    clock.advance(PAST_BACKOFF)
    assert await make_dispatcher().run_once() == 1
    assert [r.path for r in receiver.requests] == ["/hook", "/hook-ward-7"]
    request = receiver.requests[-1]
    assert verify(secret.encode(), request.body, request.headers[SIGNATURE_HEADER], clock())
    assert receiver.processed == [key] and receiver.refused == []
    assert webhook_statuses(db, notification) == [("sent", None)]

    [(actor, changed, before, after)] = changes_audited(db, UUID(endpoint))
    assert (actor, changed) == (admin_id, ["name", "updated_at", "url"])
    assert (before["url"], after["url"]) == (receiver.url + "/hook", new_url)
    assert (before["name"], after["name"]) == ("pager", "ward 7 pager")
    assert before["secret"] == after["secret"] == "[redacted]"
    assert secret not in json.dumps(before) + json.dumps(after)

    code, out, _ = await cli(capsys, "list", "--as", admin_email)
    assert code == 0 and f"ward 7 pager  {new_url}" in out


@pytest.mark.usefixtures("allow_private")
async def test_updated_types_and_priority_choose_what_is_planned(
    db: Conn,
    care_team: Team,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    make_dispatcher: MakeDispatcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patient, team = care_team
    admin_email = admin[1]
    added = await add_endpoint(capsys, receiver.url + "/hook", admin_email)
    endpoint = added["id"]
    receiver.secret = added["secret"].encode()

    code, out, err = await cli(
        capsys, "update", endpoint, "--type", "message", "--type", "device_offline", "--as", admin_email
    )
    assert code == 0, err
    assert "notification_types: [] -> ['message', 'device_offline']" in out
    alert, _ = add_notification(db, patient, team["nurse"].user_id, type_="vital_alert")
    assert await make_dispatcher().run_once() == 1 and webhook_statuses(db, alert) == []

    code, out, err = await cli(
        capsys, "update", endpoint, "--all-types", "--min-priority", "critical", "--as", admin_email
    )
    assert code == 0, err
    assert "min_priority: low -> critical" in out
    high, _ = add_notification(db, patient, team["nurse"].user_id, priority="high")
    critical, _ = add_notification(db, patient, team["nurse"].user_id, priority="critical")
    assert await make_dispatcher().run_once() == 3
    assert webhook_statuses(db, high) == [] and webhook_statuses(db, critical) == [("sent", None)]
    assert stored(db, endpoint)[2:4] == ([], "critical")


@pytest.mark.usefixtures("allow_private")
async def test_an_update_to_the_current_values_says_so_and_writes_nothing(
    db: Conn, admin: tuple[UUID, str], receiver: HttpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    url = receiver.url + "/hook"
    added = await add_endpoint(
        capsys, url, admin[1], "--type", "vital_alert", "--type", "message", "--min-priority", "high"
    )
    endpoint = added["id"]
    before = stored(db, endpoint)
    code, out, err = await cli(
        capsys, "update", endpoint, "--url", url, "--name", "pager", "--type", "message", "--type", "vital_alert",
        "--min-priority", "high", "--as", admin[1],
    )  # fmt: skip
    assert code == 0, err
    assert "already has these values: nothing changed" in out
    assert stored(db, endpoint) == before and changes_audited(db, UUID(endpoint)) == []

    code, _, err = await cli(capsys, "update", endpoint, "--as", admin[1])
    assert code == 2 and "update needs --name, --url, --type, --all-types or --min-priority" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--url", "http://127.0.0.1:9/hook"), "rule address_loopback"),
        (("--url", "http://10.1.2.3/hook"), "rule address_private"),
        (("--url", "ftp://example.com/hook"), "rule url_scheme"),
        (("--url", "http://169.254.169.254/latest"), "rule address_metadata"),
        (("--name", ""), "invalid endpoint: check webhook_endpoints_name_check"),
        (("--name", "x" * 101), "invalid endpoint: check webhook_endpoints_name_check"),
        (("--type", "vital_alert", "--type", "vital_alert"), "invalid endpoint: check"),
        (("--type", "sms_blast"), "invalid endpoint: invalid input value for enum notification_type"),
    ],
)
async def test_a_refused_update_says_why_and_changes_nothing(
    db: Conn,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.setenv("DELIVERY_WEBHOOK_ALLOW_PRIVATE", "true")
    added = await add_endpoint(capsys, receiver.url + "/hook", admin[1])
    endpoint = added["id"]
    before = stored(db, endpoint)
    monkeypatch.setenv("DELIVERY_WEBHOOK_ALLOW_PRIVATE", "false")
    code, out, err = await cli(capsys, "update", endpoint, *argv, "--as", admin[1])
    assert code == 1 and out == ""
    assert message in err
    assert stored(db, endpoint) == before and changes_audited(db, UUID(endpoint)) == []


@pytest.mark.usefixtures("allow_private")
async def test_only_admins_of_the_endpoints_organization_may_enable_or_update_it(
    db: Conn,
    care_team: Team,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, team = care_team
    added = await add_endpoint(capsys, receiver.url + "/hook", admin[1])
    endpoint = added["id"]
    code, _, err = await cli(capsys, "disable", endpoint, "--as", admin[1])
    assert code == 0, err
    before = stored(db, endpoint)

    nurse = email(db, team["nurse"].user_id)
    other = factories.create_organization(db)
    stranger = email(db, factories.create_user(db, other.id, role="admin"))
    for argv in (("enable", endpoint), ("update", endpoint, "--name", "mine now")):
        code, _, err = await cli(capsys, *argv, "--as", nurse)
        assert code == 1 and "only an organization's admins" in err
        code, _, err = await cli(capsys, *argv, "--as", stranger)
        assert code == 1 and f"no webhook endpoint {endpoint} in this organization" in err
    code, _, err = await cli(capsys, "enable", str(uuid4()), "--as", admin[1])
    assert code == 1 and "no webhook endpoint" in err
    assert stored(db, endpoint) == before and changes_audited(db, UUID(endpoint))[-1][1] == ["is_active", "updated_at"]
