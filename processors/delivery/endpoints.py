"""An organization's webhook endpoints as operators configure them: add, list, disable, enable, update, rotate the
secret.

Every call runs as the user-facing app role (the role that owns configuration; it may set secrets but never read
them back), in one transaction scoped to the acting admin's organization (`rpm.organization_id`, row-level
security) with the admin named for the audit trigger on `webhook_endpoints` (`rpm.actor_user_id`; the trigger
writes `webhook_endpoints.insert|update` rows with secrets redacted).

A URL is vetted before it is stored with `ssrf.check_endpoint` under the deployment's `EgressPolicy`: scheme,
literal address and every address the name resolves to now; a refusal names its rule (`address_loopback`, ...).
The dispatcher checks again at every delivery (DNS answers change). Enabling vets the stored URL again (the policy
or the name's addresses may have changed since it was added); updating vets a new URL. The signing secret is
generated here and returned once: the dispatcher signs with the stored text's UTF-8 bytes, which is what receivers
use as the key.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from psycopg import sql
from pydantic_settings import SettingsConfigDict

from processors.delivery.errors import DeliveryError
from processors.delivery.notification import Priority
from processors.delivery.ssrf import EgressPolicy, check_endpoint
from processors.lifecycle import Actor, Conn, LifecycleSettings, acting

__all__ = [
    "AdminRequiredError",
    "CheckedUrl",
    "Endpoint",
    "EndpointChange",
    "EndpointChangedError",
    "EndpointEdit",
    "EndpointError",
    "EndpointNotFoundError",
    "EndpointSettings",
    "InvalidEndpointError",
    "add_endpoint",
    "changes",
    "disable_endpoint",
    "enable_endpoint",
    "generate_secret",
    "get_endpoint",
    "list_endpoints",
    "rotate_secret",
    "update_endpoint",
    "vet_url",
]

# Prefixed so a leaked secret is recognisable (secret scanners, logs); 32 random bytes behind it.
SECRET_PREFIX = "rpmwh_"


class EndpointSettings(LifecycleSettings):
    """The app role's connection (`POSTGRES_USER`/`POSTGRES_PASSWORD`) and the webhook egress policy
    (`DELIVERY_WEBHOOK_ALLOW_PRIVATE`, the dispatcher's setting: configure with the policy that delivers)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    delivery_webhook_allow_private: bool = False

    def egress(self) -> EgressPolicy:
        return EgressPolicy(allow_private=self.delivery_webhook_allow_private)


class EndpointError(DeliveryError):
    """An endpoint action that cannot be done as asked (refused URLs raise `ssrf.RefusedTargetError`)."""

    retriable: ClassVar[bool] = False


class AdminRequiredError(EndpointError):
    def __init__(self, who: str) -> None:
        super().__init__(f"no active admin {who!r}: only an organization's admins configure webhook endpoints")


class EndpointNotFoundError(EndpointError):
    def __init__(self, endpoint_id: UUID) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id} in this organization")


class EndpointChangedError(EndpointError):
    """The endpoint's URL changed between vetting it and enabling the endpoint (another admin updated it)."""

    def __init__(self, endpoint_id: UUID) -> None:
        super().__init__(f"webhook endpoint {endpoint_id} changed while it was being enabled; try again")


class InvalidEndpointError(EndpointError):
    """The database refused the values (a CHECK, an unknown notification type); `reason` is its short cause."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid endpoint: {reason}")


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """A URL that passed `check_endpoint`, and the addresses its host stood for then (shown to the operator)."""

    url: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint as the app may see it (never its secret); `as_json()` is the `--json` form."""

    id: UUID
    name: str
    url: str
    notification_types: tuple[str, ...]
    min_priority: str
    is_active: bool
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, UUID):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class EndpointEdit:
    """What `update_endpoint` sets; None leaves a field as it is. The URL must have passed `vet_url`. There is no
    secret here: changing it is `rotate_secret`'s (with its grace period)."""

    name: str | None = None
    url: CheckedUrl | None = None
    notification_types: tuple[str, ...] | None = None
    min_priority: Priority | None = None


@dataclass(frozen=True, slots=True)
class EndpointChange:
    """An endpoint before and after an action, and the fields the action changed (empty: it already was as asked,
    and nothing was written or audited)."""

    before: Endpoint
    after: Endpoint
    changed: tuple[str, ...] = field(default=())


def changes(current: Endpoint, edit: EndpointEdit) -> dict[str, Any]:
    """The columns `edit` would change on `current`, with their new values (pure).

    Notification types are a set: the same types in another order are no change (a repeated type is, so the
    database refuses it as `add` would).
    """
    out: dict[str, Any] = {}
    if edit.name is not None and edit.name != current.name:
        out["name"] = edit.name
    if edit.url is not None and edit.url.url != current.url:
        out["url"] = edit.url.url
    types = edit.notification_types
    if types is not None and (len(set(types)) != len(types) or set(types) != set(current.notification_types)):
        out["notification_types"] = list(types)
    if edit.min_priority is not None and edit.min_priority.value != current.min_priority:
        out["min_priority"] = edit.min_priority.value
    return out


def generate_secret() -> str:
    """A new signing secret (49 URL-safe characters; the schema takes 32-256)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


async def vet_url(url: str, policy: EgressPolicy, timeout_s: float = 5.0) -> CheckedUrl:
    """`check_endpoint` on `url`: raises `RefusedTargetError` (reason: the rule) or `RejectedError`
    ('url_unresolvable')."""
    return CheckedUrl(url, await check_endpoint(url, policy, timeout_s))


def _acting(conn: Conn, email: str) -> contextlib.AbstractContextManager[Actor]:
    """A transaction in the admin's tenant with the admin named for the audit trigger."""
    return acting(conn, email, ("admin",), AdminRequiredError)


_COLUMNS = (
    "id, name, url, notification_types::text[] AS notification_types, min_priority::text AS min_priority, "
    "is_active, previous_secret_expires_at, created_at, updated_at"
)


def _endpoint(row: dict[str, Any]) -> Endpoint:
    return Endpoint(**{**row, "notification_types": tuple(row["notification_types"])})


def add_endpoint(
    conn: Conn,
    actor_email: str,
    *,
    name: str,
    checked: CheckedUrl,
    secret: str,
    notification_types: Sequence[str] = (),
    min_priority: Priority = Priority.LOW,
) -> Endpoint:
    """Registers an active endpoint of the admin's organization signing with `secret` (`generate_secret()`)."""
    with _acting(conn, actor_email) as actor:
        try:
            # A savepoint: a refused INSERT must not leave the acting transaction aborted.
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO webhook_endpoints (organization_id, name, url, secret, notification_types,"
                    " min_priority) VALUES (%s, %s, %s, %s, %s::notification_type[], %s::notification_priority)"
                    f" RETURNING {_COLUMNS}",
                    (actor.organization_id, name, checked.url, secret, list(notification_types), min_priority.value),
                ).fetchone()
        except psycopg.errors.CheckViolation as exc:
            raise InvalidEndpointError(f"check {exc.diag.constraint_name} refused the values") from exc
        except psycopg.errors.InvalidTextRepresentation as exc:
            raise InvalidEndpointError(exc.diag.message_primary or "invalid value") from exc
        assert row is not None
        return _endpoint(row)


def _locked(conn: Conn, endpoint_id: UUID) -> Endpoint:
    row = conn.execute(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = %s FOR UPDATE", (endpoint_id,)).fetchone()
    if row is None:
        raise EndpointNotFoundError(endpoint_id)
    return _endpoint(row)


def get_endpoint(conn: Conn, actor_email: str, endpoint_id: UUID) -> Endpoint:
    """One endpoint of the admin's organization (another organization's id is not found)."""
    with _acting(conn, actor_email):
        row = conn.execute(f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = %s", (endpoint_id,)).fetchone()
        if row is None:
            raise EndpointNotFoundError(endpoint_id)
        return _endpoint(row)


def list_endpoints(conn: Conn, actor_email: str, *, include_disabled: bool = False) -> list[Endpoint]:
    """The organization's endpoints, oldest first (active only unless `include_disabled`)."""
    with _acting(conn, actor_email):
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE is_active OR %s ORDER BY created_at, id",
            (include_disabled,),
        ).fetchall()
        return [_endpoint(r) for r in rows]


def disable_endpoint(conn: Conn, actor_email: str, endpoint_id: UUID) -> Endpoint:
    """Stops deliveries to an endpoint (idempotent): no new ones are planned; one already planned is not sent, the
    dispatcher ends it dead with `no_target`."""
    with _acting(conn, actor_email):
        row = conn.execute(
            f"UPDATE webhook_endpoints SET is_active = false WHERE id = %s RETURNING {_COLUMNS}", (endpoint_id,)
        ).fetchone()
        if row is None:
            raise EndpointNotFoundError(endpoint_id)
        return _endpoint(row)


def rotate_secret(
    conn: Conn, actor_email: str, endpoint_id: UUID, secret: str, previous_expires_at: datetime | None
) -> Endpoint:
    """Makes `secret` the endpoint's signing secret; the replaced one also signs until `previous_expires_at`
    (None: stops at once). The app cannot read secrets: migration 0530's trigger keeps the replaced one."""
    with _acting(conn, actor_email):
        try:
            with conn.transaction():
                row = conn.execute(
                    "UPDATE webhook_endpoints SET secret = %s, previous_secret_expires_at = %s WHERE id = %s"
                    f" RETURNING {_COLUMNS}",
                    (secret, previous_expires_at, endpoint_id),
                ).fetchone()
        except psycopg.errors.CheckViolation as exc:
            raise InvalidEndpointError(f"check {exc.diag.constraint_name} refused the values") from exc
        if row is None:
            raise EndpointNotFoundError(endpoint_id)
        return _endpoint(row)


def enable_endpoint(conn: Conn, actor_email: str, endpoint_id: UUID, checked: CheckedUrl) -> EndpointChange:
    """Resumes deliveries to a disabled endpoint whose URL, `checked`, was vetted just now (`get_endpoint`, then
    `vet_url` on its URL). New notifications are planned for it again, and a delivery planned before it was
    disabled and not yet attempted since is sent at its next attempt. An active endpoint is left as it is
    (`changed` empty). Raises `EndpointChangedError` if the URL is no longer the vetted one."""
    with _acting(conn, actor_email):
        current = _locked(conn, endpoint_id)
        if current.is_active:
            return EndpointChange(current, current)
        if current.url != checked.url:
            raise EndpointChangedError(endpoint_id)
        row = conn.execute(
            f"UPDATE webhook_endpoints SET is_active = true WHERE id = %s RETURNING {_COLUMNS}", (endpoint_id,)
        ).fetchone()
        assert row is not None
        return EndpointChange(current, _endpoint(row), ("is_active",))


# How each editable column is bound in the UPDATE (its PostgreSQL type where it has one).
_PLACEHOLDERS = {
    "name": "%s",
    "url": "%s",
    "notification_types": "%s::notification_type[]",
    "min_priority": "%s::notification_priority",
}


def update_endpoint(conn: Conn, actor_email: str, endpoint_id: UUID, edit: EndpointEdit) -> EndpointChange:
    """Changes an endpoint in place, enabled or not; the secret is untouched. Writes only the fields that differ
    (the audit row's `changed`); when none does, nothing is written (`changed` empty). The dispatcher reads the
    endpoint when it claims a delivery, so the next attempt of a planned delivery goes to the new URL; types and
    priority apply to notifications planned from now on."""
    with _acting(conn, actor_email):
        current = _locked(conn, endpoint_id)
        new = changes(current, edit)
        if not new:
            return EndpointChange(current, current)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = ").format(sql.Identifier(column)) + sql.SQL(_PLACEHOLDERS[column]) for column in new
        )
        query = sql.SQL("UPDATE webhook_endpoints SET {} WHERE id = %s RETURNING ").format(assignments)
        try:
            with conn.transaction():
                row = conn.execute(query + sql.SQL(_COLUMNS), (*new.values(), endpoint_id)).fetchone()
        except psycopg.errors.CheckViolation as exc:
            raise InvalidEndpointError(f"check {exc.diag.constraint_name} refused the values") from exc
        except psycopg.errors.InvalidTextRepresentation as exc:
            raise InvalidEndpointError(exc.diag.message_primary or "invalid value") from exc
        assert row is not None
        return EndpointChange(current, _endpoint(row), tuple(new))
