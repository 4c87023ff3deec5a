"""`python -m scripts.chaos` (make chaos): fault scenarios under load against a private, throw-away stack on
loopback; prints scenario, load, faults, lost, duplicated, recovery. Exit status 1 if a guarantee failed.

    python -m scripts.chaos                          every scenario at the issue's durations (~15 minutes)
    python -m scripts.chaos --quick                  shorter faults and load, same scenarios (~5 minutes)
    python -m scripts.chaos --only kill-ingest --rate 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from scripts.chaos import scenarios
from scripts.chaos.scenarios import Env, Row
from scripts.chaos.stack import stack
from scripts.chaos.table import render

# (share group, ingest running through the fault) per broker scenario.
BROKER_VARIANTS = {
    "restart-broker": [("", False), ("", True), ("ingest", False), ("ingest", True)],
    "kill-broker": [("", False), ("ingest", False)],
}


async def _run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    quick = args.quick
    wanted = args.only or [*scenarios.SCENARIOS, "faust-kafka"]
    plain = [name for name in wanted if name != "faust-kafka"]
    if plain:
        with stack() as running:
            env: Env = await scenarios.provision(running, args.devices)
            for name in plain:
                print(f"... {name}", file=sys.stderr, flush=True)
                if name == "kill-ingest":
                    row = await scenarios.kill_ingest(
                        env, rate=args.rate, duration_s=40 if quick else 120, every_s=10
                    )  # fmt: skip
                elif name == "stop-postgres":
                    row = await scenarios.stop_database(env, rate=args.rate, outage_s=20 if quick else 60)
                elif name == "pause-postgres":
                    row = await scenarios.pause_database(env, rate=args.rate, outage_s=20 if quick else 60)
                elif name in ("restart-broker", "kill-broker"):
                    # The default plain subscription (one ingest process) and scale-out's $share/ingest; a restart
                    # also with ingest running through it (the usual case: ingest reconnects by itself).
                    kill = name == "kill-broker"
                    for share, online in BROKER_VARIANTS[name]:
                        row = await scenarios.broker_fault(
                            env, rate=args.rate, kill=kill, share=share, ingest_online=online
                        )  # fmt: skip
                        rows.append(row)
                        print(render([row]), file=sys.stderr, flush=True)
                    continue
                elif name == "overload":
                    row = await scenarios.overload(env, capacity_probe_s=10 if quick else 20,
                                                   duration_s=20 if quick else 60)  # fmt: skip
                elif name == "poison":
                    row = await scenarios.poison(env, rate=args.rate)
                elif name == "poison-patient":
                    row = await scenarios.poison_patient(env, rate=args.rate, duration_s=20 if quick else 60)
                else:
                    raise SystemExit(f"unknown scenario {name}")
                rows.append(row)
                print(render([row]), file=sys.stderr, flush=True)
    if "faust-kafka" in wanted:
        from scripts.chaos.kafka import faust_and_kafka

        with stack(with_kafka=True) as running:
            env = await scenarios.provision(running, args.devices, care_team=True)
            rows.append(await faust_and_kafka(env, rate=args.rate, quick=quick))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--only", action="append", choices=[*scenarios.SCENARIOS, "faust-kafka"])
    parser.add_argument("--rate", type=float, default=2000, help="steady offered load, messages/s (default 2000)")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The simulated devices' reconnect attempts during broker faults are expected: keep the table readable.
    logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    rows = asyncio.run(_run(args))
    print(render(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2))
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
