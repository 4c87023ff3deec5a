"""`python -m scripts.demo`: the whole pipeline on this machine, driven by the simulated fleet, then a summary.

Starts ingest (with the inline processors), the processors' clock and the delivery service as child processes,
plays the seeded fleet's last hours (with a sprinkle of faults) and a live clinical scenario through the real
broker, stops everything gracefully and reports what the pipeline did: readings stored, refusals by reason, alert
episodes, notifications and symptom flags. Bounded in time (default 3 minutes). Logs go to
$RPM_STATE_DIR/demo/*.log.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg

from ingest.settings import IngestSettings
from migrations.settings import MigrationSettings
from scripts.pipeline import PY, start_pipeline, stop_pipeline


def run_step(title: str, args: Sequence[str], deadline: float) -> int:
    print(f"\n== {title}", flush=True)
    remaining = max(5.0, deadline - time.monotonic())
    try:
        return subprocess.run([PY, *args], timeout=remaining, check=False).returncode
    except subprocess.TimeoutExpired:
        print("   (stopped: the demo's time budget ran out)", flush=True)
        return 124


def summary(conn: psycopg.Connection[Any], since: datetime) -> list[str]:
    def rows(query: str) -> list[tuple[Any, ...]]:
        return conn.execute(query, {"since": since}).fetchall()

    stored = rows("SELECT count(*), count(DISTINCT patient_id) FROM vital_readings WHERE received_at >= %(since)s")
    refused = rows(
        "SELECT reason::text, count(*) FROM ingest_rejections WHERE received_at >= %(since)s GROUP BY 1 ORDER BY 2 DESC"
    )
    alerts = rows(
        "SELECT t.code, a.direction::text, a.severity::text, a.retrospective, count(*)"
        "  FROM vital_alerts a JOIN vital_types t ON t.id = a.vital_type_id"
        " WHERE a.created_at >= %(since)s GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC, 1"
    )
    notes = rows(
        "SELECT type::text, priority::text, status::text, count(*) FROM notifications"
        " WHERE created_at >= %(since)s GROUP BY 1, 2, 3 ORDER BY 4 DESC"
    )
    symptoms = rows(
        "SELECT code, severity::text, count(*) FROM symptoms"
        " WHERE created_at >= %(since)s GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    out = [f"readings stored:   {stored[0][0]:,} for {stored[0][1]} patients"]
    out.append("refused:           " + (", ".join(f"{r} {n}" for r, n in refused) or "none"))
    out.append("alert episodes:    " + (str(sum(r[-1] for r in alerts)) if alerts else "none"))
    out += [
        f"  {code} {direction} {severity}{' (retrospective, not paged)' if retro else ''}: {n}"
        for code, direction, severity, retro, n in alerts
    ]
    out.append("notifications:     " + (str(sum(r[-1] for r in notes)) if notes else "none"))
    out += [f"  {kind} {priority} -> {status}: {n}" for kind, priority, status, n in notes]
    out.append("symptom flags:     " + (", ".join(f"{c} ({s}) {n}" for c, s, n in symptoms) or "none"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo")
    parser.add_argument("--budget", type=float, default=180.0, help="seconds the whole demo may take")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of the seeded fleet's history to replay")
    parser.add_argument("--scenario", default="hypertensive_crisis", help="a live clinical scenario to play")
    args = parser.parse_args(argv)

    started = time.monotonic()
    deadline = started + args.budget - 20  # keep time to stop the services and report
    since = datetime.now(UTC)
    settings = IngestSettings()
    logs = settings.rpm_state_dir / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    print("== starting the pipeline: ingest (inline processors), processors clock, delivery", flush=True)
    children = start_pipeline(settings, dict(os.environ), logs)
    try:
        print(f"   ready in {time.monotonic() - started:.1f}s; logs in {logs}", flush=True)

        run_step(
            f"the seeded fleet's last {args.hours:g} hours (faults injected at 1%)",
            ["-m", "device_simulators", "demo", "--hours", str(args.hours), "--settle", "5"],
            deadline,
        )
        run_step(
            f"live scenario: {args.scenario}",
            ["-m", "device_simulators", "scenario", args.scenario, "--settle", "5"],
            deadline,
        )
    finally:
        print("\n== stopping the pipeline", flush=True)
        codes = stop_pipeline(children)
        print("   " + ", ".join(f"{name} exited {code}" for name, code in codes.items()), flush=True)

    with psycopg.connect(MigrationSettings().admin_dsn()) as conn:
        print(f"\n== summary ({time.monotonic() - started:.0f}s)")
        for line in summary(conn, since):
            print(line)
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
