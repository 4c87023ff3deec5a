"""The care-plan template weight-trend fixes (0085 heart failure, 0086 diabetes) on a database that had patients
before them: a fresh database migrated to just before 0086, a diabetes patient seeded from the template and one a
clinician tailored, then the rest of the migrations."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from migrations import runner
from migrations.settings import MigrationSettings

Conn = psycopg.Connection[Any]
SEEDED = "seeded from template"


def _patient(conn: Conn, org: UUID, mrn: str) -> tuple[UUID, UUID]:
    """A patient on the diabetes template; returns (patient id, care plan id)."""
    row = conn.execute(
        "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
        " VALUES (%s, %s, 'x', 'patient', 'P', %s) RETURNING id",
        (org, f"{mrn}@example.org", mrn),
    ).fetchone()
    assert row is not None
    row = conn.execute(
        "INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
        " VALUES (%s, %s, %s, '1950-01-01', 'America/Chicago') RETURNING id",
        (org, row[0], mrn),
    ).fetchone()
    assert row is not None
    patient: UUID = row[0]
    row = conn.execute(
        "INSERT INTO care_plans (organization_id, patient_id, template_id, status, title, start_date)"
        " SELECT %s, %s, id, 'active', 'Diabetes', current_date FROM care_plan_templates"
        " WHERE code = 'diabetes_rpm' AND organization_id IS NULL RETURNING id",
        (org, patient),
    ).fetchone()
    assert row is not None
    return patient, row[0]


def _seed_weight(conn: Conn, org: UUID, patient: UUID, plan: UUID, *, version: int, reason: str) -> None:
    """The diabetes template's weight rule as 0070 wrote it (168 h, 2.3 kg, no margin), as the seed copies it."""
    conn.execute(
        "INSERT INTO vital_requirements (organization_id, patient_id, vital_type_id, care_plan_id, version,"
        " effective_from, change_reason, trend_window_hours, trend_delta, cooldown_minutes, expected_per_day,"
        " expected_times, expected_window_minutes)"
        " SELECT %s, %s, id, %s, %s, now() - interval '90 days' + %s * interval '1 day', %s, 168, 2.3, 1440, 1,"
        " '{07:30}', 180 FROM vital_types WHERE code = 'body_weight'",
        (org, patient, plan, version, version, reason),
    )


def _weight_versions(conn: Conn, patient: UUID) -> list[tuple[int, float, int, bool, str]]:
    rows = conn.execute(
        "SELECT r.version, r.hysteresis_margin, r.clear_count, r.effective_to IS NULL, r.change_reason"
        " FROM vital_requirements r JOIN vital_types v ON v.id = r.vital_type_id"
        " WHERE r.patient_id = %s AND v.code = 'body_weight' ORDER BY r.version",
        (patient,),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def test_diabetes_weight_trend_clears_with_a_margin_and_untailored_copies_get_a_new_version(
    scratch_db: str, migration_settings: MigrationSettings
) -> None:
    available = runner.discover()
    runner.migrate(scratch_db, migration_settings.roles(), [m for m in available if m.version < 86])
    with psycopg.connect(scratch_db) as conn:
        row = conn.execute("INSERT INTO organizations (name, slug) VALUES ('O', 'o-0086') RETURNING id").fetchone()
        assert row is not None
        org: UUID = row[0]
        seeded, seeded_plan = _patient(conn, org, "seeded")
        _seed_weight(conn, org, seeded, seeded_plan, version=1, reason=SEEDED)
        tailored, tailored_plan = _patient(conn, org, "tailored")
        _seed_weight(conn, org, tailored, tailored_plan, version=1, reason=SEEDED)
        conn.execute(
            "UPDATE vital_requirements SET effective_to = now() - interval '1 day' WHERE patient_id = %s", (tailored,)
        )
        _seed_weight(conn, org, tailored, tailored_plan, version=2, reason="clinician: wider window")
        before = _weight_versions(conn, tailored)

    runner.migrate(scratch_db, migration_settings.roles(), available)

    with psycopg.connect(scratch_db) as conn:
        row = conn.execute(
            "SELECT r FROM care_plan_templates, jsonb_array_elements(default_requirements) r"
            " WHERE code = 'diabetes_rpm' AND organization_id IS NULL AND r ->> 'vital_type' = 'body_weight'"
        ).fetchone()
        assert row is not None
        weight = row[0]
        assert (weight["trend_window_hours"], weight["trend_delta"]) == (168, 2.3)
        assert (weight["hysteresis_margin"], weight["clear_count"]) == (0.9, 2)
        templates: dict[str, int] = dict(
            conn.execute(
                "SELECT code, jsonb_array_length(default_requirements) FROM care_plan_templates"
                " WHERE organization_id IS NULL"
            ).fetchall()
        )
        assert templates["diabetes_rpm"] == 5  # no other vital lost or duplicated by the rewrite

        assert _weight_versions(conn, seeded) == [
            (1, 0.0, 1, False, SEEDED),
            (2, 0.9, 2, True, "care plan template diabetes_rpm: weight-trend hysteresis (migration 0086)"),
        ]
        assert _weight_versions(conn, tailored) == before
