"""The webhook endpoints CLI end to end: the app role in the admin's tenant, the SSRF guard at configuration time,
the printed secret against a real receiver and the real dispatcher, rotation, disabling, and the audit trail."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from processors.delivery.endpoints_cli import parse_grace
from processors.delivery.errors import SignatureError
from processors.delivery.signing import SIGNATURE_HEADER, verify
from tests import factories
from tests.delivery.conftest import FakeClock, MakeDispatcher, add_endpoint, add_notification, audit, cli, email
from tests.delivery.receivers import HttpReceiver

Conn = psycopg.Connection[Any]
Team = tuple[factories.Patient, dict[str, factories.Provider]]


@pytest.mark.usefixtures("allow_private")
async def test_an_added_endpoint_receives_notifications_signed_with_the_printed_secret(
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
    printed = added["secret"]
    assert added["addresses"] == ["127.0.0.1"] and added["is_active"] and len(printed) >= 32
    endpoint = UUID(added["id"])
    receiver.secret = printed.encode()  # the receiver is configured with what the operator was shown

    _, key = add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 2  # in-app + webhook
    assert receiver.processed == [key] and receiver.refused == []
    request = receiver.requests[0]
    assert verify(printed.encode(), request.body, request.headers[SIGNATURE_HEADER], clock())

    # Listing never shows a secret; the audit row names the admin and redacts the secret.
    code, out, _ = await cli(capsys, "list", "--as", admin_email, "--json")
    assert code == 0
    listed = json.loads(out)
    assert [e["id"] for e in listed] == [str(endpoint)] and "secret" not in listed[0]
    assert printed not in out
    [(action, actor, after, details)] = audit(db, endpoint)
    assert (action, actor) == ("webhook_endpoints.insert", admin_id)
    assert after["secret"] == "[redacted]" and after["url"] == receiver.url + "/hook"
    assert printed not in json.dumps(after) + json.dumps(details)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://127.0.0.1:9/hook", "address_loopback"),
        ("http://localhost:9/hook", "address_loopback"),
        ("http://10.1.2.3/hook", "address_private"),
        ("ftp://example.com/hook", "url_scheme"),
    ],
)
async def test_a_refused_url_names_the_rule_and_stores_nothing(
    db: Conn,
    org: factories.Organization,
    admin: tuple[UUID, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
    rule: str,
) -> None:
    monkeypatch.setenv("DELIVERY_WEBHOOK_ALLOW_PRIVATE", "false")
    code, out, err = await cli(capsys, "add", url, "--name", "pager", "--as", admin[1])
    assert code == 1 and out == ""
    assert f"rule {rule}" in err
    if rule in ("address_loopback", "address_private"):
        assert "DELIVERY_WEBHOOK_ALLOW_PRIVATE" in err
    assert db.execute("SELECT count(*) FROM webhook_endpoints WHERE organization_id = %s", (org.id,)).fetchone() == (0,)


@pytest.mark.usefixtures("allow_private")
async def test_the_metadata_service_is_refused_even_with_private_targets_allowed(
    db: Conn, org: factories.Organization, admin: tuple[UUID, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await cli(capsys, "add", "http://169.254.169.254/latest", "--name", "x", "--as", admin[1])
    assert code == 1 and "rule address_metadata" in err and "ALLOW_PRIVATE" not in err
    assert db.execute("SELECT count(*) FROM webhook_endpoints WHERE organization_id = %s", (org.id,)).fetchone() == (0,)


@pytest.mark.usefixtures("allow_private")
async def test_after_rotation_the_next_delivery_is_signed_with_the_new_secret(
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
    first = added["secret"]
    endpoint = added["id"]

    # With a grace period both secrets sign: a receiver still on the old one keeps verifying meanwhile.
    code, out, err = await cli(capsys, "rotate-secret", endpoint, "--as", admin_email, "--json")
    assert code == 0, err
    rotated = json.loads(out)
    second = rotated["secret"]
    assert second != first and rotated["previous_secret_expires_at"] is not None
    receiver.secret = second.encode()
    add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 2
    header = receiver.requests[-1].headers[SIGNATURE_HEADER]
    body = receiver.requests[-1].body
    assert header.count("v1=") == 2 and receiver.refused == []
    assert verify(second.encode(), body, header, clock()) and verify(first.encode(), body, header, clock())

    # Without one the replaced secret stops at once.
    code, out, err = await cli(capsys, "rotate-secret", endpoint, "--as", admin_email, "--grace", "0", "--json")
    assert code == 0, err
    third = json.loads(out)["secret"]
    receiver.secret = third.encode()
    _, key = add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 2
    assert receiver.processed[-1] == key and receiver.refused == []
    header = receiver.requests[-1].headers[SIGNATURE_HEADER]
    body = receiver.requests[-1].body
    assert header.count("v1=") == 1 and verify(third.encode(), body, header, clock())
    with pytest.raises(SignatureError, match="mismatch"):
        verify(second.encode(), body, header, clock())

    rotations = [a for a in audit(db, UUID(endpoint)) if a[0] == "webhook_endpoints.update"]
    assert [(action, actor) for action, actor, _, _ in rotations] == [("webhook_endpoints.update", admin_id)] * 2
    for _, _, after, details in rotations:
        assert "secret" in details["changed"] and after["secret"] == "[redacted]"
        assert not any(s in json.dumps(after) for s in (first, second, third))


@pytest.mark.usefixtures("allow_private")
async def test_a_disabled_endpoint_receives_nothing_more(
    db: Conn,
    care_team: Team,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    make_dispatcher: MakeDispatcher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    patient, team = care_team
    admin_id, admin_email = admin
    added = await add_endpoint(capsys, receiver.url + "/hook", admin_email)
    receiver.secret = added["secret"].encode()
    add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 2
    assert len(receiver.requests) == 1

    code, out, _ = await cli(capsys, "disable", added["id"], "--as", admin_email)
    assert code == 0 and "disabled" in out
    nid, _ = add_notification(db, patient, team["nurse"].user_id)
    assert await make_dispatcher().run_once() == 1  # in-app only
    assert len(receiver.requests) == 1
    assert db.execute(
        "SELECT array_agg(channel::text) FROM notification_deliveries WHERE notification_id = %s", (nid,)
    ).fetchone() == (["in_app"],)

    code, out, _ = await cli(capsys, "list", "--as", admin_email)
    assert code == 0 and added["id"] not in out and "0 endpoint(s)" in out
    code, out, _ = await cli(capsys, "list", "--as", admin_email, "--all")
    assert code == 0 and added["id"] in out and "disabled" in out
    [*_, (action, actor, after, details)] = audit(db, UUID(added["id"]))
    assert (action, actor, after["is_active"], details["changed"]) == (
        "webhook_endpoints.update",
        admin_id,
        False,
        ["is_active", "updated_at"],
    )


@pytest.mark.usefixtures("allow_private")
async def test_only_admins_of_the_endpoints_organization_may_change_it(
    db: Conn,
    care_team: Team,
    admin: tuple[UUID, str],
    receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, team = care_team
    added = await add_endpoint(capsys, receiver.url + "/hook", admin[1])
    nurse = email(db, team["nurse"].user_id)
    code, _, err = await cli(capsys, "disable", added["id"], "--as", nurse)
    assert code == 1 and "only an organization's admins" in err

    other = factories.create_organization(db)
    stranger = email(db, factories.create_user(db, other.id, role="admin"))
    for action in ("disable", "rotate-secret"):
        code, _, err = await cli(capsys, action, added["id"], "--as", stranger)
        assert code == 1 and f"no webhook endpoint {added['id']}" in err
    code, out, _ = await cli(capsys, "list", "--as", stranger, "--json")
    assert code == 0 and json.loads(out) == []
    row = db.execute("SELECT is_active FROM webhook_endpoints WHERE id = %s", (added["id"],)).fetchone()
    assert row == (True,)

    monkeypatch.delenv("RPM_ACTOR_EMAIL", raising=False)
    code, _, err = await cli(capsys, "list")
    assert code == 2 and "--as EMAIL" in err


def test_grace_periods() -> None:
    assert parse_grace("24h") == timedelta(hours=24)
    assert parse_grace("30m") == timedelta(minutes=30)
    assert parse_grace("0") == timedelta(0)
    for bad in ("24", "1w", "-1h", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_grace(bad)
