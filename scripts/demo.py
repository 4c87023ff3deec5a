"""`python -m scripts.demo`: the whole pipeline on this machine, driven by the simulated fleet, then a summary.

Starts ingest (with the inline processors), the processors' clock and the delivery service as child processes,
plays through the real broker the seeded fleet's last hours (with a sprinkle of faults), a clinical scenario
backfilled over the days before now (its episodes are recorded as retrospective: nobody is paged for old data), and
a clinical scenario on another patient live in compressed real time (its days happen now in seconds, so its
episodes page the care team), stops everything gracefully and reports what the pipeline did: readings stored,
refusals by reason, alert episodes (live and paged vs retrospective), notifications and symptom flags. Bounded in
time (default 3 minutes; about a minute and a half on a quiet machine). Logs go to $RPM_STATE_DIR/demo/*.log.
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

from device_simulators.credentials import load_fleet
from device_simulators.settings import SimulatorSettings
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


def summary(conn: psycopg.Connection[Any], since: datetime, serials: Sequence[str]) -> list[str]:
    """What the pipeline did since `since` for the fleet's devices and their patients (others may share the
    database and the broker: their rows are not the demo's)."""

    def rows(query: str) -> list[tuple[Any, ...]]:
        return conn.execute(query, {"since": since, "serials": list(serials)}).fetchall()

    patients = (
        "patient_id IN (SELECT a.patient_id FROM device_assignments a JOIN devices d ON d.id = a.device_id"
        " WHERE d.serial = ANY(%(serials)s))"
    )
    stored = rows(
        f"SELECT count(*), count(DISTINCT patient_id) FROM vital_readings WHERE received_at >= %(since)s AND {patients}"
    )
    refused = rows(
        "SELECT reason::text, count(*) FROM ingest_rejections"
        " WHERE received_at >= %(since)s AND claimed_serial = ANY(%(serials)s) GROUP BY 1 ORDER BY 2 DESC"
    )
    alerts = rows(
        "SELECT t.code, a.direction::text, a.severity::text, a.retrospective, count(*)"
        "  FROM vital_alerts a JOIN vital_types t ON t.id = a.vital_type_id"
        f" WHERE a.created_at >= %(since)s AND a.{patients} GROUP BY 1, 2, 3, 4 ORDER BY 4, 5 DESC, 1"
    )
    pages = rows(
        "SELECT count(*), count(DISTINCT recipient_user_id),"
        "       count(*) FILTER (WHERE status IN ('sent', 'delivered', 'read'))"
        f"  FROM notifications WHERE type = 'vital_alert' AND created_at >= %(since)s AND {patients}"
    )
    notes = rows(
        "SELECT type::text, priority::text, status::text, count(*) FROM notifications"
        f" WHERE created_at >= %(since)s AND {patients} GROUP BY 1, 2, 3 ORDER BY 4 DESC"
    )
    symptoms = rows(
        "SELECT code, severity::text, count(*) FROM symptoms"
        f" WHERE created_at >= %(since)s AND {patients} GROUP BY 1, 2 ORDER BY 3 DESC"
    )
    out = [f"readings stored:   {stored[0][0]:,} for {stored[0][1]} patients"]
    out.append("refused:           " + (", ".join(f"{r} {n}" for r, n in refused) or "none"))
    live = [r for r in alerts if not r[3]]
    retrospective = [r for r in alerts if r[3]]
    out.append(
        f"alert episodes:    {sum(r[-1] for r in alerts)}: live {sum(r[-1] for r in live)},"
        f" retrospective {sum(r[-1] for r in retrospective)}"
    )
    out.append("  live (timely readings; the care team is paged):")
    out += [f"    {code} {direction} {severity}: {n}" for code, direction, severity, _, n in live] or ["    none"]
    out.append("  retrospective (readings that arrived late, e.g. backfilled; recorded, nobody paged):")
    out += [f"    {code} {direction} {severity}: {n}" for code, direction, severity, _, n in retrospective] or [
        "    none"
    ]
    out.append(
        f"pages:             {pages[0][0]} to {pages[0][1]} care-team members"
        f" ({pages[0][2]} sent by the delivery service)"
    )
    out.append("notifications:     " + (str(sum(r[-1] for r in notes)) if notes else "none"))
    out += [f"  {kind} {priority} -> {status}: {n}" for kind, priority, status, n in notes]
    out.append("symptom flags:     " + (", ".join(f"{c} ({s}) {n}" for c, s, n in symptoms) or "none"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo")
    parser.add_argument("--budget", type=float, default=180.0, help="seconds the whole demo may take")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of the seeded fleet's history to replay")
    parser.add_argument("--scenario", default="hypertensive_crisis", help="a clinical scenario to backfill")
    parser.add_argument(
        "--live-scenario", default="hypertensive_crisis", help="a clinical scenario to play live (another patient)"
    )
    parser.add_argument(
        "--live-seconds", type=float, default=20.0, help="the live scenario's days compressed into this many seconds"
    )
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
            f"backfilled scenario: {args.scenario} (late data: retrospective episodes, no pages)",
            ["-m", "device_simulators", "scenario", args.scenario, "--settle", "3"],
            deadline,
        )
        run_step(
            f"live scenario: {args.live_scenario}, compressed into {args.live_seconds:g} s (timely data: pages)",
            [
                *("-m", "device_simulators", "scenario", args.live_scenario),
                *("--live", str(args.live_seconds), "--household", "1", "--settle", "5"),
            ],
            deadline,
        )
    finally:
        print("\n== stopping the pipeline", flush=True)
        codes = stop_pipeline(children)
        print("   " + ", ".join(f"{name} exited {code}" for name, code in codes.items()), flush=True)

    serials = [d.serial for d in load_fleet(SimulatorSettings().device_credentials_file).devices]
    with psycopg.connect(MigrationSettings().admin_dsn()) as conn:
        print(f"\n== summary ({time.monotonic() - started:.0f}s; the seeded fleet's {len(serials)} devices)")
        for line in summary(conn, since, serials):
            print(line)
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
