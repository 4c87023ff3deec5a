"""The alert lifecycle CLI end to end: real database, app role, row security, audit, escalation interplay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pytest

from processors.alerts_cli import main
from processors.delivery.escalation import EscalationPolicy
from processors.delivery.escalator import Escalator
from processors.delivery.metrics import DeliveryMetrics
from tests import factories
from tests.delivery.conftest import START, FakeClock, add_alert, email

Conn = psycopg.Connection[Any]
Team = tuple[factories.Patient, dict[str, factories.Provider]]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def audit(db: Conn, alert_id: UUID) -> list[tuple[str, UUID, Any]]:
    rows = db.execute(
        "SELECT action, actor_user_id, details FROM audit_logs"
        " WHERE entity_id = %s AND action LIKE 'vital_alert.%%' ORDER BY occurred_at",
        (alert_id,),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def test_acknowledging_stops_escalation_and_is_audited(
    db: Conn, org: factories.Organization, care_team: Team, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    patient, team = care_team
    nurse = team["nurse"]
    alert = add_alert(db, patient)
    code, out, _ = cli(capsys, "ack", str(alert), "--as", email(db, nurse.user_id), "--json", "--note", "calling")
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "acknowledged" and shown["acknowledged_by"] == email(db, nurse.user_id)
    assert audit(db, alert) == [("vital_alert.acknowledge", nurse.user_id, {"source": "alerts_cli", "note": "calling"})]

    clock = FakeClock(START + timedelta(hours=1))
    escalator = Escalator(
        pool, EscalationPolicy(after=timedelta(minutes=10)), DeliveryMetrics(), clock, organizations=frozenset({org.id})
    )
    assert await escalator.run_once() == []
    assert db.execute("SELECT count(*) FROM alert_escalations WHERE alert_id = %s", (alert,)).fetchone() == (0,)
    # Acknowledging twice is refused, and says why.
    code, _, err = cli(capsys, "ack", str(alert), "--as", email(db, nurse.user_id))
    assert code == 1 and "it is acknowledged" in err


async def test_an_escalated_episode_shows_its_history(
    db: Conn, org: factories.Organization, care_team: Team, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    patient, team = care_team
    alert = add_alert(db, patient)
    clock = FakeClock(START + timedelta(minutes=10))
    escalator = Escalator(
        pool, EscalationPolicy(after=timedelta(minutes=10)), DeliveryMetrics(), clock, organizations=frozenset({org.id})
    )
    assert len(await escalator.run_once()) == 1
    physician = email(db, team["primary_physician"].user_id)
    assert cli(capsys, "ack", str(alert), "--as", physician)[0] == 0
    code, out, _ = cli(capsys, "show", str(alert), "--as", physician, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["escalation_level"] == 1
    assert [(h["event"], h["detail"], h["actor"]) for h in shown["history"]] == [
        ("escalated", "primary_physician", None),
        ("acknowledge", None, physician),
    ]


def test_assign_then_list_mine(db: Conn, care_team: Team, capsys: pytest.CaptureFixture[str]) -> None:
    patient, team = care_team
    alert = add_alert(db, patient)
    other = add_alert(db, patient, vital_type="heart_rate", direction="high")
    manager, physician = email(db, team["care_manager"].user_id), email(db, team["primary_physician"].user_id)
    assert cli(capsys, "assign", str(alert), "--to", physician, "--as", manager)[0] == 0
    code, out, _ = cli(capsys, "list", "--mine", "--as", physician, "--json")
    assert code == 0
    assert [a["id"] for a in json.loads(out)] == [str(alert)]
    code, out, _ = cli(capsys, "list", "--as", physician)
    assert code == 0 and str(alert) in out and str(other) in out and "2 episode(s)" in out
    actions = audit(db, alert)
    assert [(a[0], a[1]) for a in actions] == [("vital_alert.assign", team["care_manager"].user_id)]


def test_resolving_records_the_outcome_and_re_arms_the_rule(
    db: Conn, care_team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    patient, team = care_team
    alert = add_alert(db, patient)
    db.execute("LISTEN processor_context")
    nurse = email(db, team["nurse"].user_id)
    code, out, _ = cli(capsys, "resolve", str(alert), "--note", "sensor misplaced; repeat 97 %", "--as", nurse)
    assert code == 0 and "resolved" in out
    row = db.execute(
        "SELECT status::text, last_change::text, resolved_by, resolution_note, resolved_at IS NOT NULL"
        " FROM vital_alerts WHERE id = %s",
        (alert,),
    ).fetchone()
    assert row == ("resolved", "cleared", team["nurse"].user_id, "sensor misplaced; repeat 97 %", True)
    assert [a[0] for a in audit(db, alert)] == ["vital_alert.resolve"]
    # The processors are told to drop the episode from their state...
    # (Other sessions notify on the same channel: keep this patient's.)
    ours = {"patient_id": str(patient.id), "table": "vital_alerts"}
    notices = []
    for n in db.notifies(timeout=5):
        notices.append(json.loads(n.payload))
        if ours in notices:
            break
    assert ours in notices
    # ...and the rule can open a new episode for the same vital and direction.
    assert add_alert(db, patient, opened_at=START + timedelta(hours=1)) != alert
    code, _, err = cli(capsys, "resolve", str(alert), "--note", "again", "--as", nurse)
    assert code == 1 and "it is resolved" in err


def test_other_organizations_and_patients_are_refused(
    db: Conn, care_team: Team, capsys: pytest.CaptureFixture[str]
) -> None:
    patient, _ = care_team
    alert = add_alert(db, patient)
    stranger_org = factories.create_organization(db)
    stranger = factories.create_provider(db, stranger_org.id)
    code, _, err = cli(capsys, "ack", str(alert), "--as", email(db, stranger.user_id))
    assert code == 1 and "no alert" in err
    code, out, _ = cli(capsys, "list", "--as", email(db, stranger.user_id), "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = cli(capsys, "ack", str(alert), "--as", email(db, patient.user_id))
    assert code == 1 and "no active care-team user" in err
    assert audit(db, alert) == []


def test_entry_point_runs_as_a_process(db: Conn, care_team: Team) -> None:
    patient, team = care_team
    alert = add_alert(db, patient)
    result = subprocess.run(
        [sys.executable, "-m", "processors", "alerts", "ack", str(alert), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RPM_ACTOR_EMAIL": email(db, team["nurse"].user_id)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "acknowledged"
