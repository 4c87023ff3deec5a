"""`python -m processors alerts list|show|ack|assign|resolve [--json]`: the alert lifecycle for care teams.

The acting user is named with `--as EMAIL` (or RPM_ACTOR_EMAIL); every action is audited with that user.
Exit codes: 0 done, 1 refused (unknown user or alert, or a transition the episode's status does not allow).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from processors.lifecycle import (
    AlertSummary,
    LifecycleError,
    LifecycleSettings,
    acknowledge,
    assign,
    connect,
    get_alert,
    list_alerts,
    resolve,
)

__all__ = ["add_alert_commands", "main", "run"]

Clock = Callable[[], datetime]


def add_alert_commands(commands: Any) -> None:
    """Adds `alerts ...` to a parent parser's subcommands (`python -m processors`)."""
    alerts = commands.add_parser("alerts", help="list, show, acknowledge, assign and resolve alert episodes")
    _add_arguments(alerts)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="alerts_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--as", dest="actor", default=os.environ.get("RPM_ACTOR_EMAIL"), help="acting user's email")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    listing = actions.add_parser("list", parents=[common], help="episodes of your organization, newest first")
    listing.add_argument(
        "--status", action="append", choices=["open", "acknowledged", "resolved"], help="default: open, acknowledged"
    )
    listing.add_argument("--patient", type=UUID)
    listing.add_argument("--mine", action="store_true", help="only episodes assigned to you")
    listing.add_argument("--limit", type=int, default=50)

    show = actions.add_parser("show", parents=[common], help="one episode and its history")
    show.add_argument("alert_id", type=UUID)

    ack = actions.add_parser("ack", parents=[common], help="acknowledge (stops escalation)")
    ack.add_argument("alert_id", type=UUID)
    ack.add_argument("--note")

    to = actions.add_parser("assign", parents=[common], help="assign to a care-team user")
    to.add_argument("alert_id", type=UUID)
    to.add_argument("--to", required=True, help="assignee's email")
    to.add_argument("--note")

    done = actions.add_parser("resolve", parents=[common], help="resolve with an outcome note (re-arms the rule)")
    done.add_argument("alert_id", type=UUID)
    done.add_argument("--note", required=True, help="the outcome")


def _row(a: AlertSummary) -> str:
    assigned = f" -> {a.assigned_to}" if a.assigned_to else ""
    escalated = f" esc{a.escalation_level}" if a.escalation_level else ""
    retro = " retro" if a.retrospective else ""
    limit = "" if a.threshold is None else f" (limit {a.threshold:g})"
    return (
        f"{a.id}  {a.opened_at:%Y-%m-%d %H:%M}Z  {a.severity:<8} {a.status:<12} {a.mrn:<14} "
        f"{a.vital_type} {a.direction} {a.value:g}{limit}{escalated}{retro}{assigned}"
    )


def run(args: argparse.Namespace, settings: LifecycleSettings, clock: Clock = lambda: datetime.now(UTC)) -> int:
    """Runs one `alerts` subcommand; prints to stdout, errors to stderr."""
    if not args.actor:
        print("error: name the acting user with --as EMAIL (or RPM_ACTOR_EMAIL)", file=sys.stderr)
        return 2
    with connect(settings) as conn:
        try:
            if args.alerts_command == "list":
                statuses = tuple(args.status or ("open", "acknowledged"))
                found = list_alerts(
                    conn, args.actor, statuses=statuses, patient_id=args.patient, assigned_to_me=args.mine,
                    limit=args.limit,
                )  # fmt: skip
                if args.json:
                    print(json.dumps([a.as_json() for a in found], indent=2))
                else:
                    for a in found:
                        print(_row(a))
                    print(f"{len(found)} episode(s)")
                return 0
            if args.alerts_command == "show":
                alert, history = get_alert(conn, args.actor, args.alert_id)
                if args.json:
                    print(json.dumps({**alert.as_json(), "history": history}, indent=2))
                else:
                    print(_row(alert))
                    if alert.resolution_note:
                        print(f"  outcome: {alert.resolution_note}")
                    for h in history:
                        who = f" by {h['actor']}" if h["actor"] else ""
                        detail = f": {h['detail']}" if h["detail"] else ""
                        print(f"  {h['at']}  {h['event']}{who}{detail}")
                return 0
            now = clock()
            if args.alerts_command == "ack":
                changed = acknowledge(conn, args.actor, args.alert_id, now, args.note)
            elif args.alerts_command == "assign":
                changed = assign(conn, args.actor, args.alert_id, args.to, now, args.note)
            else:
                changed = resolve(conn, args.actor, args.alert_id, now, args.note)
        except LifecycleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(changed.as_json(), indent=2) if args.json else _row(changed))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processors alerts")
    _add_arguments(parser)
    return run(parser.parse_args(argv), LifecycleSettings())


if __name__ == "__main__":
    sys.exit(main())
