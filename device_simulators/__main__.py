"""`python -m device_simulators fleet|scenario|demo …`: simulated devices against the project's broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from device_simulators.credentials import Fleet, load_fleet
from device_simulators.fleet import FleetPlan, Identity, run_fleet
from device_simulators.message import Envelope
from device_simulators.player import PlayReport
from device_simulators.publisher import Broker, ConnectError, Connection
from device_simulators.settings import SimulatorSettings

logger = logging.getLogger("device_simulators")


def _fleet_args(commands: Any) -> None:
    p = commands.add_parser("fleet", help="load: N devices publishing at a target rate, then a summary and JSON")
    p.add_argument("--devices", type=int, default=0, help="how many devices (default: all in the credentials)")
    p.add_argument("--provision", action="store_true", help="register --devices fresh devices for this run")
    p.add_argument("--rate", type=float, default=0, help="messages/s over the fleet (0: as fast as possible)")
    p.add_argument("--duration", type=float, default=10, help="seconds of publishing")
    p.add_argument("--messages", type=int, default=None, help="stop after this many messages in total")
    p.add_argument("--readings", type=int, default=1, help="readings per message (1-500)")
    p.add_argument("--window", type=int, default=1000, help="unacknowledged publishes per connection")
    p.add_argument(
        "--multiplex",
        type=int,
        default=0,
        metavar="N",
        help="N shared connections as MQTT_LOADGEN_USER instead of one per device",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-id", default=None, help="tag in meta.run (default: random)")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.add_argument("--reconcile", action="store_true", help="count the run in vital_readings after it")
    p.add_argument("--settle", type=float, default=10.0, help="seconds to wait for ingest before --reconcile")


async def _wait_accepted(fleet: Fleet, limit_s: float = 15.0) -> None:
    """A broker reload (SIGHUP) is asynchronous: waits until the newest device can log in."""
    last = fleet.devices[-1]
    deadline = time.monotonic() + limit_s
    while True:
        conn = Connection(f"probe-{secrets.token_hex(4)}", last.serial, last.password, on_ack=lambda *_: None)
        try:
            await conn.connect(fleet.broker, limit_s=2)
        except ConnectError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        await conn.close()
        return


async def _fleet(args: argparse.Namespace, settings: SimulatorSettings) -> int:
    run_id = args.run_id or f"r{secrets.token_hex(4)}"
    broker = Broker(settings.mqtt_host, settings.mqtt_port)
    if args.provision:
        import psycopg

        from device_simulators.provision import provision_fleet
        from ingest.broker_sync import sync_broker
        from ingest.settings import IngestSettings

        ingest_settings = IngestSettings()
        with psycopg.connect(ingest_settings.admin_dsn(), autocommit=True) as conn:
            _, fleet = provision_fleet(conn, f"load-{run_id}", args.devices or 100, broker)
        sync_broker(ingest_settings)
        await _wait_accepted(fleet)
    else:
        fleet = load_fleet(settings.device_credentials_file)
    devices = fleet.devices[: args.devices] if args.devices else fleet.devices
    plan = FleetPlan(
        run_id=run_id,
        rate=args.rate,
        readings_per_message=args.readings,
        duration_s=args.duration,
        max_messages=args.messages,
        window=args.window,
        connections=args.multiplex or 1,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    multiplex = None
    if args.multiplex:
        if not settings.mqtt_loadgen_user:
            print("--multiplex needs MQTT_LOADGEN_USER/MQTT_LOADGEN_PASSWORD", file=sys.stderr)
            return 2
        multiplex = Identity(settings.mqtt_loadgen_user, settings.mqtt_loadgen_password.get_secret_value())
    result = await run_fleet(
        plan,
        [d.serial for d in devices],
        fleet.broker,
        device_passwords=None if multiplex else [d.password for d in devices],
        multiplex=multiplex,
        stop=stop,
    )
    if args.reconcile:
        result["reconciliation"] = await _reconcile(result, args.settle)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["errors"] == 0 and result["drained"] else 1


async def _reconcile(result: dict[str, Any], settle: float) -> dict[str, Any]:
    from datetime import datetime

    import psycopg

    from device_simulators.load import LoadMessages
    from device_simulators.reconcile import reconcile
    from ingest.settings import IngestSettings

    await asyncio.sleep(settle)
    origin = datetime.fromisoformat(result["origin"])
    span = LoadMessages(result["run_id"], result["readings_per_message"], origin).span(max(result["last_seq"].values()))
    with psycopg.connect(IngestSettings().admin_dsn()) as conn:
        rec = reconcile(conn, result["run_id"], result["last_seq"], result["readings_per_message"], origin, span)
    print(
        f"  stored {rec.stored:,} of {rec.sent:,} messages ({rec.rows:,} rows): missing {rec.missing:,},"
        f" partial {rec.partial:,}, unexpected {rec.unexpected:,}",
        file=sys.stderr,
    )
    return {
        "sent": rec.sent,
        "stored": rec.stored,
        "rows": rec.rows,
        "missing": rec.missing,
        "partial": rec.partial,
        "unexpected": rec.unexpected,
    }


def _scenario_args(commands: Any) -> None:
    from device_simulators.scenario import SCENARIOS

    p = commands.add_parser("scenario", help="play a scripted clinical scenario on a seeded patient's devices")
    p.add_argument("name", nargs="?", choices=sorted(SCENARIOS), help="omit to list the scenarios")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", type=float, default=0.0, help="per-message probability of each fault")
    p.add_argument("--speed", type=float, default=0.0, help="simulated seconds per real second (0: at once)")
    p.add_argument(
        "--live",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="play live in compressed real time: the scenario's days happen now, in SECONDS (default: a backfill"
        " of the days before now, judged retrospective)",
    )
    p.add_argument("--household", type=int, default=0, help="which fitting seeded patient (0: the first)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait before reading the outcome")


def _demo_args(commands: Any) -> None:
    p = commands.add_parser("demo", help="the whole seeded fleet's last hours through the pipeline, with a summary")
    p.add_argument("--hours", type=float, default=24.0, help="how many hours of measurements to send")
    p.add_argument("--faults", type=float, default=0.01, help="per-message probability of each fault")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settle", type=float, default=10.0, help="seconds to wait before reading the outcome")


async def _progress(report: PlayReport, total: int, done: asyncio.Event) -> None:
    started = time.monotonic()
    while not done.is_set():
        await asyncio.sleep(1.0)
        print(
            f"{time.monotonic() - started:6.1f}s  published {report.published:,}/{total:,}  acked {report.acked:,}"
            f"  refused by broker {report.refused:,}",
            file=sys.stderr,
            flush=True,
        )


async def _play(envelopes: list[Envelope], fleet: Fleet, speed: float, settle: float, faults: Counter[str]) -> int:
    from datetime import UTC, datetime

    import psycopg

    from device_simulators.player import play
    from device_simulators.reconcile import outcome
    from ingest.settings import IngestSettings

    since = datetime.now(UTC)
    passwords = {d.serial: d.password for d in fleet.devices}
    report = PlayReport()
    done = asyncio.Event()
    watcher = asyncio.create_task(_progress(report, len(envelopes), done))
    try:
        await play(envelopes, passwords, fleet.broker, speed=speed, report=report)
    finally:
        done.set()
        await watcher
    expected_stored, expected_refusals = report.expected_stored, report.expected_refusals
    print(
        f"published {report.published:,} messages, acked {report.acked:,}, refused by the broker"
        f" {report.refused:,} (as expected: {report.as_expected})"
    )
    print("faults injected: " + (", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none"))
    print(
        f"expected: {expected_stored:,} new readings stored; refusals "
        + (", ".join(f"{k} {v}" for k, v in sorted(expected_refusals.items())) or "none")
    )
    await asyncio.sleep(settle)
    with psycopg.connect(IngestSettings().admin_dsn()) as conn:
        seen = outcome(conn, sorted(passwords), since)
    print(
        f"pipeline: {seen.stored:,} readings stored; refused "
        + (", ".join(f"{k} {v}" for k, v in seen.refused.items()) or "none")
    )
    print("alerts raised: " + (", ".join(f"{k} {v}" for k, v in seen.alerts.items()) or "none"))
    print(f"care-team pages: {seen.pages}")
    return 0 if report.as_expected else 1


async def _scenario(args: argparse.Namespace, settings: SimulatorSettings) -> int:
    from datetime import UTC, datetime, timedelta

    from device_simulators.demo import household_for, households
    from device_simulators.fault import FaultPlan, inject
    from device_simulators.scenario import SCENARIOS, day_zero, run_scenario
    from device_simulators.timeline import Timeline, compress

    if args.name is None:
        for name, sc in sorted(SCENARIOS.items()):
            print(f"{name:20} {sc.description}")
        return 0
    scenario = SCENARIOS[args.name]
    fleet = load_fleet(settings.device_credentials_file)
    home = household_for(scenario, households(list(fleet.devices)), index=args.household)
    if home is None:
        print(f"no seeded patient (number {args.household}) has the devices {sorted(scenario.kinds)}", file=sys.stderr)
        return 2
    serials = {d.kind: d.serial for d in home.devices}
    now = datetime.now(UTC)
    start = now - timedelta(days=scenario.days)
    _, envelopes = run_scenario(
        scenario, start, serial_prefix=home.key, timezone=home.timezone, seed=args.seed, serials=serials
    )
    speed = args.speed
    if args.live > 0:
        first = day_zero(start, home.timezone).astimezone(UTC)
        span = timedelta(days=scenario.days)
        envelopes = compress(envelopes, Timeline.fitting(first, first + span, now, timedelta(seconds=args.live)))
        speed = 1.0
    faults: Counter[str] = Counter()
    if args.faults > 0:
        others = [d.serial for d in fleet.devices if d.serial not in serials.values()]
        faulty: list[Envelope] = []
        for serial in serials.values():
            result = inject(
                [e for e in envelopes if e.serial == serial],
                FaultPlan.every(args.faults),
                seed=args.seed,
                foreign_serial=others[0] if others else None,
            )
            faults.update(result.counts)
            faulty.extend(result.envelopes)
        envelopes = sorted(faulty, key=lambda e: e.send_at)
    print(f"{scenario.name}: {scenario.description}")
    when = (
        f"live, its {scenario.days} days compressed into {args.live:g} s from now"
        if args.live > 0
        else f"backfilled, over the {scenario.days} days ending now"
    )
    print(f"patient {home.key} ({home.timezone}), devices {', '.join(sorted(serials.values()))};"
          f" {len(envelopes)} messages, {when}")  # fmt: skip
    expected = ", ".join(f"{e.vital} {e.direction} {e.severity}" for e in scenario.episodes) or "none"
    paging = "live: paging the care team" if args.live > 0 else "retrospective: nobody paged"
    print(f"the processors should raise ({paging}): {expected}; symptoms: {', '.join(scenario.symptoms) or 'none'}")
    return await _play(envelopes, fleet, speed, args.settle, faults)


async def _demo(args: argparse.Namespace, settings: SimulatorSettings) -> int:
    from datetime import UTC, datetime, timedelta

    from device_simulators.demo import households, routine

    fleet = load_fleet(settings.device_credentials_file)
    homes = households(list(fleet.devices))
    end = datetime.now(UTC)
    envelopes, counts = routine(homes, end - timedelta(hours=args.hours), end, seed=args.seed, fault_rate=args.faults)
    print(
        f"demo: {len(homes)} patients, {len(fleet.devices)} devices, {len(envelopes):,} messages"
        f" from the last {args.hours:g} hours"
    )
    return await _play(envelopes, fleet, 0.0, args.settle, Counter({k.value: v for k, v in counts.items()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_simulators")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    _fleet_args(commands)
    _scenario_args(commands)
    _demo_args(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("gmqtt").setLevel(logging.WARNING)
    settings = SimulatorSettings()
    if args.command == "fleet":
        return asyncio.run(_fleet(args, settings))
    if args.command == "scenario":
        return asyncio.run(_scenario(args, settings))
    if args.command == "demo":
        return asyncio.run(_demo(args, settings))
    return 2


if __name__ == "__main__":
    sys.exit(main())
