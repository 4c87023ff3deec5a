"""`python -m processors.delivery endpoints add|list|disable|enable|update|rotate-secret [--json]`: webhook
endpoints.

The acting admin is named with `--as EMAIL` (or RPM_ACTOR_EMAIL); the endpoint belongs to the admin's organization
and every change is audited with that admin. `add` and `rotate-secret` print the new signing secret once: it
cannot be read back (the app role may set secrets, not read them); `update` never touches it. URLs are vetted with
the SSRF guard under DELIVERY_WEBHOOK_ALLOW_PRIVATE, the dispatcher's setting: by `add`, by `update --url`, and
by `enable` (the stored URL, again). Enabling an enabled endpoint or an update to the values it already has says
so and writes nothing. Exit codes: 0 done (or nothing to do), 1 refused (with the reason: the SSRF rule for a
URL, unknown admin or endpoint, a value the database refuses), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from processors.delivery.endpoints import (
    CheckedUrl,
    Endpoint,
    EndpointChange,
    EndpointEdit,
    EndpointError,
    EndpointSettings,
    add_endpoint,
    disable_endpoint,
    enable_endpoint,
    generate_secret,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
    vet_url,
)
from processors.delivery.errors import RefusedTargetError, RejectedError
from processors.delivery.notification import Priority
from processors.lifecycle import connect

__all__ = ["add_endpoint_commands", "parse_grace", "run"]

Clock = Callable[[], datetime]

_PRIVATE_RULES = frozenset({"address_loopback", "address_link_local", "address_private"})
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_grace(text: str) -> timedelta:
    """'0', '90s', '30m', '24h', '7d' as a timedelta (argparse type)."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if match is None or (match[2] == "" and match[1] != "0"):
        raise argparse.ArgumentTypeError(f"{text!r}: a number with a unit s, m, h or d (e.g. 24h), or 0")
    return timedelta(**{_UNITS[match[2] or "s"]: int(match[1])})


def add_endpoint_commands(commands: Any) -> None:
    """Adds `endpoints ...` to a parent parser's subcommands (`python -m processors.delivery`)."""
    parser = commands.add_parser(
        "endpoints", help="add, list, disable, enable, update webhook endpoints and rotate their secrets"
    )
    actions = parser.add_subparsers(dest="endpoints_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--as", dest="actor", default=os.environ.get("RPM_ACTOR_EMAIL"), help="acting admin's email")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    add = actions.add_parser("add", parents=[common], help="register an endpoint (prints its secret once)")
    add.add_argument("url", help="http(s) URL the dispatcher POSTs to")
    add.add_argument("--name", required=True, help="a label, 1-100 characters")
    add.add_argument(
        "--type", dest="types", action="append", default=[], help="a notification type to send (repeat; default all)"
    )
    add.add_argument("--min-priority", choices=[p.value for p in Priority], default=Priority.LOW.value)

    listing = actions.add_parser("list", parents=[common], help="your organization's endpoints (never secrets)")
    listing.add_argument("--all", action="store_true", help="include disabled endpoints")

    disable = actions.add_parser("disable", parents=[common], help="stop deliveries to an endpoint")
    disable.add_argument("endpoint_id", type=UUID)

    enable = actions.add_parser("enable", parents=[common], help="resume deliveries (the URL is vetted again)")
    enable.add_argument("endpoint_id", type=UUID)

    update = actions.add_parser(
        "update", parents=[common], help="change name, URL, types or priority in place (never the secret)"
    )
    update.add_argument("endpoint_id", type=UUID)
    update.add_argument("--name", help="a new label, 1-100 characters")
    update.add_argument("--url", help="a new http(s) URL (vetted like add's)")
    types = update.add_mutually_exclusive_group()
    types.add_argument(
        "--type", dest="types", action="append", help="the notification types to send (repeat; replaces the set)"
    )
    types.add_argument("--all-types", action="store_true", help="send every notification type")
    update.add_argument("--min-priority", choices=[p.value for p in Priority])

    rotate = actions.add_parser("rotate-secret", parents=[common], help="new secret (printed once)")
    rotate.add_argument("endpoint_id", type=UUID)
    rotate.add_argument(
        "--grace",
        type=parse_grace,
        default=timedelta(hours=24),
        help="how long the old secret also signs (a second v1=), e.g. 24h (default), 30m, 0 (stops at once)",
    )


def _row(e: Endpoint) -> str:
    state = "active" if e.is_active else "disabled"
    types = ",".join(e.notification_types) or "all types"
    until = e.previous_secret_expires_at
    rotating = f" old secret signs until {until.astimezone(UTC):%Y-%m-%d %H:%M}Z" if until else ""
    return f"{e.id}  {state:<8} {e.name}  {e.url}  ({types}, >= {e.min_priority}){rotating}"


def _refusal(url: str, exc: RejectedError) -> str:
    hint = ""
    if exc.reason in _PRIVATE_RULES:
        hint = "; loopback, link-local and private targets need DELIVERY_WEBHOOK_ALLOW_PRIVATE=true (local runs only)"
    elif exc.reason == "url_unresolvable":
        hint = "; the name does not resolve from here"
    return f"error: refused {url}: rule {exc}{hint}"


def _print_secret(endpoint: Endpoint, secret: str, as_json: bool, extra: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps({**endpoint.as_json(), **extra, "secret": secret}, indent=2))
        return
    print(_row(endpoint))
    print(f"secret: {secret}")
    print("This secret is shown once and cannot be read back: configure the receiver with it now.")


def _print_change(change: EndpointChange, as_json: bool, unchanged: str) -> None:
    before, after = change.before.as_json(), change.after.as_json()
    if as_json:
        changed = {f: {"before": before[f], "after": after[f]} for f in change.changed}
        print(json.dumps({**after, "changed": changed}, indent=2))
        return
    print(_row(change.after))
    for f in change.changed:
        print(f"  {f}: {before[f]} -> {after[f]}")
    if not change.changed:
        print(unchanged)


def _vet(url: str, settings: EndpointSettings) -> CheckedUrl | None:
    """The vetted URL, or None after printing the refusal."""
    try:
        return asyncio.run(vet_url(url, settings.egress()))
    except (RefusedTargetError, RejectedError) as exc:
        print(_refusal(url, exc), file=sys.stderr)
        return None


def _add(args: argparse.Namespace, settings: EndpointSettings) -> int:
    checked = _vet(args.url, settings)
    if checked is None:
        return 1
    secret = generate_secret()
    with connect(settings) as conn:
        added = add_endpoint(
            conn, args.actor, name=args.name, checked=checked, secret=secret,
            notification_types=args.types, min_priority=Priority(args.min_priority),
        )  # fmt: skip
    _print_secret(added, secret, args.json, {"addresses": list(checked.addresses)})
    return 0


def _enable(args: argparse.Namespace, settings: EndpointSettings) -> int:
    with connect(settings) as conn:
        current = get_endpoint(conn, args.actor, args.endpoint_id)
    if current.is_active:
        change = EndpointChange(current, current)
    else:
        # Vetted outside any transaction (resolving the name may take seconds); enable_endpoint then refuses if
        # the URL is no longer the one vetted.
        checked = _vet(current.url, settings)
        if checked is None:
            return 1
        with connect(settings) as conn:
            change = enable_endpoint(conn, args.actor, args.endpoint_id, checked)
    _print_change(change, args.json, f"endpoint {args.endpoint_id} is already enabled: nothing changed")
    return 0


def _update(args: argparse.Namespace, settings: EndpointSettings) -> int:
    types: list[str] | None = [] if args.all_types else args.types
    if args.name is None and args.url is None and types is None and args.min_priority is None:
        print("error: update needs --name, --url, --type, --all-types or --min-priority", file=sys.stderr)
        return 2
    checked = None
    if args.url is not None:
        checked = _vet(args.url, settings)
        if checked is None:
            return 1
    edit = EndpointEdit(
        name=args.name,
        url=checked,
        notification_types=None if types is None else tuple(types),
        min_priority=None if args.min_priority is None else Priority(args.min_priority),
    )
    with connect(settings) as conn:
        change = update_endpoint(conn, args.actor, args.endpoint_id, edit)
    _print_change(change, args.json, f"endpoint {args.endpoint_id} already has these values: nothing changed")
    return 0


def run(args: argparse.Namespace, settings: EndpointSettings, clock: Clock = lambda: datetime.now(UTC)) -> int:
    """Runs one `endpoints` subcommand; prints to stdout, errors to stderr."""
    if not args.actor:
        print("error: name the acting admin with --as EMAIL (or RPM_ACTOR_EMAIL)", file=sys.stderr)
        return 2
    command = args.endpoints_command
    try:
        if command == "add":
            return _add(args, settings)
        if command == "enable":
            return _enable(args, settings)
        if command == "update":
            return _update(args, settings)
        with connect(settings) as conn:
            if command == "list":
                found = list_endpoints(conn, args.actor, include_disabled=args.all)
                if args.json:
                    print(json.dumps([e.as_json() for e in found], indent=2))
                else:
                    for e in found:
                        print(_row(e))
                    print(f"{len(found)} endpoint(s)")
                return 0
            if command == "disable":
                disabled = disable_endpoint(conn, args.actor, args.endpoint_id)
                print(json.dumps(disabled.as_json(), indent=2) if args.json else _row(disabled))
                return 0
            secret = generate_secret()
            grace: timedelta = args.grace
            until = clock() + grace if grace > timedelta(0) else None
            rotated = rotate_secret(conn, args.actor, args.endpoint_id, secret, until)
        _print_secret(rotated, secret, args.json, {})
        return 0
    except EndpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
