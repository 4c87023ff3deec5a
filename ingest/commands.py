"""Admin commands: `devices add|assign|unassign|revoke|rotate-credentials|list` and `rejections list|replay`.

Device commands run as the schema owner and resync the broker's password file and ACL after each change, so a new
device can connect, and a revoked one is locked out, within seconds; revoking also puts the device's client
certificates (mutual TLS) into the CRL, which the same broker reload applies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from ingest import certificates, provisioning
from ingest.broker_sync import sync_broker
from ingest.rejection import RejectionReason
from ingest.settings import IngestSettings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DEVICE_KINDS = ("bp_cuff", "pulse_oximeter", "scale", "glucometer", "thermometer", "respiratory_monitor", "multi")


def when(text: str) -> datetime:
    """An RFC 3339 time, `now`, or a duration ago such as `15m`, `2h`, `7d`."""
    if text == "now":
        return datetime.now(UTC)
    match = _DURATION.fullmatch(text)
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a time with an offset nor a duration") from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs an offset (e.g. Z or +01:00)")
    return parsed


def add_device_commands(commands: Any) -> None:
    devices = commands.add_parser("devices", help="register, assign, revoke devices and rotate their credentials")
    sub = devices.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a device; prints its MQTT password once")
    add.add_argument("--org", required=True, help="organization id or slug")
    add.add_argument("--serial", required=True)
    add.add_argument("--kind", required=True, choices=DEVICE_KINDS)
    add.add_argument("--model")
    add.add_argument("--manufacturer")
    add.add_argument("--firmware")
    add.add_argument("--json", action="store_true")
    assign = sub.add_parser("assign", help="assign a device to a patient from a time (default now)")
    assign.add_argument("serial")
    assign.add_argument("--patient", required=True, type=UUID)
    assign.add_argument("--since", type=when, default="now")
    unassign = sub.add_parser("unassign", help="end the device's current assignment")
    unassign.add_argument("serial")
    unassign.add_argument("--at", type=when, default="now")
    revoke = sub.add_parser("revoke", help="revoke a device: the broker refuses it, ingest refuses its messages")
    revoke.add_argument("serial")
    rotate = sub.add_parser("rotate-credentials", help="issue a new MQTT password (printed once)")
    rotate.add_argument("serial")
    rotate.add_argument("--json", action="store_true")
    listing = sub.add_parser("list", help="list devices")
    listing.add_argument("--org", help="organization id or slug")
    listing.add_argument("--json", action="store_true")


def add_rejection_commands(commands: Any) -> None:
    rejections = commands.add_parser("rejections", help="inspect and replay refused messages and readings")
    sub = rejections.add_subparsers(dest="action", required=True)
    reasons = [r.value for r in RejectionReason]
    for name, text in (("list", "list stored refusals"), ("replay", "ingest what is valid now, idempotently")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--reason", action="append", choices=reasons, help="repeatable; default all")
        p.add_argument("--since", type=when, help="RFC 3339 time or a duration ago (15m, 2h, 7d)")
        p.add_argument("--serial")
        p.add_argument("--limit", type=int)
        if name == "list":
            p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: IngestSettings) -> int:
    try:
        if args.command == "devices":
            return _devices(args, settings)
        if args.command == "rejections":
            return _rejections(args, settings)
    except provisioning.ProvisioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


def _organization(conn: psycopg.Connection[Any], ref: str) -> UUID:
    try:
        return UUID(ref)
    except ValueError:
        row = conn.execute("SELECT id FROM organizations WHERE slug = %s", (ref,)).fetchone()
        if row is None:
            raise provisioning.ProvisioningError(f"no organization with slug {ref!r}") from None
        return UUID(str(row[0]))


def _devices(args: argparse.Namespace, settings: IngestSettings) -> int:
    with psycopg.connect(settings.admin_dsn(), autocommit=True) as conn:
        if args.action == "list":
            org = _organization(conn, args.org) if args.org else None
            devices = provisioning.list_devices(conn, organization_id=org)
            if args.json:
                print(json.dumps([_device_json(d) for d in devices], indent=2))
            else:
                for d in devices:
                    patient = d.patient_id or "-"
                    print(f"{d.serial:24} {d.kind:20} {d.status:8} patient={patient} seen={d.last_seen_at or '-'}")
            return 0
        if args.action == "add":
            added = provisioning.add_device(
                conn,
                organization_id=_organization(conn, args.org),
                serial=args.serial,
                kind=args.kind,
                model=args.model,
                manufacturer=args.manufacturer,
                firmware_version=args.firmware,
            )
            sync_broker(settings)
            _secret(args, {"id": str(added.id), "serial": added.serial, "password": added.password})
        elif args.action == "assign":
            assignment = provisioning.assign_device(conn, serial=args.serial, patient_id=args.patient, since=args.since)
            print(f"assigned {args.serial} to patient {args.patient} from {args.since.isoformat()} ({assignment})")
        elif args.action == "unassign":
            ended = provisioning.unassign_device(conn, serial=args.serial, at=args.at)
            print(f"{args.serial}: " + ("assignment ended" if ended else "had no open assignment"))
        elif args.action == "revoke":
            return _revoke(conn, settings, args.serial)
        elif args.action == "rotate-credentials":
            password = provisioning.rotate_credentials(conn, serial=args.serial)
            sync_broker(settings)
            _secret(args, {"serial": args.serial, "password": password})
    return 0


def _revoke(conn: psycopg.Connection[Any], settings: IngestSettings, serial: str) -> int:
    """The registry first (ingest refuses the serial), then its client certificates into the CRL, then one broker
    reload for the password file, the ACL and the CRL: neither a password nor a certificate logs it in again."""
    provisioning.revoke_device(conn, serial=serial)
    revocation: certificates.Revocation | None = None
    failure: Exception | None = None
    try:
        revocation = certificates.revoke_certificates(serial)
    except (certificates.CertificateError, OSError, subprocess.SubprocessError) as exc:
        failure = exc
    sync_broker(settings)
    print(f"revoked {serial}")
    if revocation is not None and revocation.has_ca:
        print(f"{serial}: {revocation.revoked} client certificate(s) revoked; the broker reloaded its CRL")
    elif revocation is not None:
        print(f"{serial}: no project CA here (scripts/tls.sh): client certificates, if any, are not revoked")
    if failure is not None:
        print(f"error: {serial} is revoked, but its client certificates could not be: {failure}", file=sys.stderr)
        return 1
    return 0


def _secret(args: argparse.Namespace, values: dict[str, str]) -> None:
    if args.json:
        print(json.dumps(values))
    else:
        print(f"serial:   {values['serial']}\npassword: {values['password']}  (shown once; stored only as a hash)")


def _device_json(d: provisioning.DeviceInfo) -> dict[str, Any]:
    return {
        "id": str(d.id),
        "organization_id": str(d.organization_id),
        "serial": d.serial,
        "kind": d.kind,
        "status": d.status,
        "model": d.model,
        "patient_id": str(d.patient_id) if d.patient_id else None,
        "last_seen_at": d.last_seen_at.isoformat() if d.last_seen_at else None,
    }


_LIST = """
SELECT id, received_at, reason::text, claimed_serial, message_id, reading_index, detail, payload_size,
       replayed_at, replay_result
  FROM ingest_rejections
 WHERE (%(reasons)s::text[] IS NULL OR reason::text = ANY(%(reasons)s::text[]))
   AND (%(since)s::timestamptz IS NULL OR received_at >= %(since)s)
   AND (%(serial)s::text IS NULL OR claimed_serial = %(serial)s)
 ORDER BY received_at DESC, id
 LIMIT %(limit)s
"""


def _rejections(args: argparse.Namespace, settings: IngestSettings) -> int:
    reasons = [RejectionReason(r) for r in args.reason] if args.reason else None
    if args.action == "replay":
        from ingest.replay import replay

        summary = asyncio.run(replay(settings, reasons=reasons, since=args.since, serial=args.serial, limit=args.limit))
        results = ", ".join(f"{k}: {v}" for k, v in sorted(summary.results.items())) or "nothing to replay"
        print(f"replayed {summary.examined} refusals — {results}")
        return 0
    params = {
        "reasons": [r.value for r in reasons] if reasons else None,
        "since": args.since,
        "serial": args.serial,
        "limit": args.limit or 100,
    }
    with psycopg.connect(settings.ingest_dsn(), autocommit=True) as conn:
        rows = conn.execute(_LIST, params).fetchall()
    keys = (
        "id",
        "received_at",
        "reason",
        "serial",
        "message_id",
        "reading_index",
        "detail",
        "payload_size",
        "replayed_at",
        "replay_result",
    )
    if args.json:
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], default=str, indent=2))
        return 0
    for row in rows:
        r = dict(zip(keys, row, strict=True))
        where = f"#{r['reading_index']}" if r["reading_index"] is not None else "message"
        replayed = f" [replayed: {r['replay_result']}]" if r["replayed_at"] else ""
        print(
            f"{r['received_at']:%Y-%m-%d %H:%M:%S} {r['reason']:22} {r['serial'] or '-':20} {r['message_id'] or '-':24}"
            f" {where:8} {r['detail']}{replayed}"
        )
    return 0
