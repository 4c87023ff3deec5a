"""`make seed` is idempotent and produces what the demo and the simulators rely on."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.settings import IngestSettings
from scripts import seed
from tests import mqtt_probe


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The credentials file is written to the working directory: work on a copy, so the developer's own file stays
    # untouched and still matches the registry afterwards (a missing password would be rotated).
    copy = tmp_path / "device_credentials.json"
    if seed.CREDENTIALS.exists():
        shutil.copy(seed.CREDENTIALS, copy)
    monkeypatch.setattr(seed, "CREDENTIALS", copy)
    return tmp_path


def test_seed_twice_changes_nothing_and_covers_every_device_vital(
    db: psycopg.Connection[Any], ingest_settings: IngestSettings, in_tmp_cwd: Path
) -> None:
    first = seed.seed(db, ingest_settings)
    credentials = json.loads(seed.CREDENTIALS.read_text())
    second = seed.seed(db, ingest_settings)
    assert first == second
    assert first["organizations"] == 2
    assert first["patients"] == 2 * seed.PATIENTS_PER_ORG
    assert first["care_plans"] == first["patients"]
    assert first["devices"] == first["device_assignments"] == len(credentials["devices"])
    # The second run kept every password that still matched.
    assert json.loads(seed.CREDENTIALS.read_text()) == credentials
    assert stat.S_IMODE(seed.CREDENTIALS.stat().st_mode) == 0o600

    uncovered = db.execute(
        """
        SELECT d.serial, t.code
          FROM devices d
          JOIN organizations o ON o.id = d.organization_id AND o.slug = ANY(%s)
          JOIN device_assignments a ON a.device_id = d.id AND a.assigned_to IS NULL
          JOIN device_kind_vitals k ON k.kind = d.kind
          JOIN vital_types t ON t.id = k.vital_type_id
         WHERE NOT EXISTS (SELECT 1 FROM vital_requirements r
                            WHERE r.patient_id = a.patient_id AND r.vital_type_id = k.vital_type_id
                              AND r.effective_to IS NULL)
        """,
        ([s.slug for s in seed.ORGS],),
    ).fetchall()
    assert uncovered == []

    teams = db.execute(
        "SELECT min(n), max(n), count(DISTINCT tz) FROM ("
        " SELECT p.id, p.timezone AS tz, count(a.id) AS n FROM patients p"
        " JOIN organizations o ON o.id = p.organization_id AND o.slug = ANY(%s)"
        " JOIN patient_provider_assignments a ON a.patient_id = p.id AND a.ended_at IS NULL GROUP BY p.id) s",
        ([s.slug for s in seed.ORGS],),
    ).fetchone()
    assert teams is not None
    assert (teams[0], teams[1]) == (2, 3)
    assert teams[2] >= 5

    # The broker accepts a seeded device with the password from the credentials file.
    device = credentials["devices"][0]
    mqtt_probe.wait_until(
        ingest_settings.mqtt_host, ingest_settings.mqtt_port, device["serial"], device["password"], accepted=True
    )


def test_a_lost_password_is_rotated(
    db: psycopg.Connection[Any], ingest_settings: IngestSettings, in_tmp_cwd: Path
) -> None:
    seed.seed(db, ingest_settings)
    data = json.loads(seed.CREDENTIALS.read_text())
    lost = data["devices"][1]
    data["devices"][1] = {**lost, "password": "forgotten"}
    seed.CREDENTIALS.write_text(json.dumps(data))
    seed.seed(db, ingest_settings)
    renewed = {d["serial"]: d["password"] for d in json.loads(seed.CREDENTIALS.read_text())["devices"]}
    assert renewed[lost["serial"]] not in {"forgotten", lost["password"]}
    mqtt_probe.wait_until(
        ingest_settings.mqtt_host, ingest_settings.mqtt_port, lost["serial"], renewed[lost["serial"]], accepted=True
    )
