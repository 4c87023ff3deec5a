"""db-compare finds each kind of drift between a database and the migrations, and only real drift."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from scripts import db_compare
from scripts.catalog import Catalog
from scripts.database import DatabaseSettings, migrated_scratch
from scripts.drift import Change, Drift, compare, render

Conn = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def settings() -> DatabaseSettings:
    return DatabaseSettings()


@pytest.fixture
def target(settings: DatabaseSettings) -> Iterator[str]:
    """A migrated scratch database to damage (never the project database)."""
    with migrated_scratch(settings, "drifted") as name:
        yield name


def execute(settings: DatabaseSettings, database: str, *statements: str) -> None:
    conn: Conn
    with psycopg.connect(settings.admin_dsn(database), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def by_name(drifts: list[Drift]) -> dict[tuple[str, str], Drift]:
    return {(d.section, d.name): d for d in drifts}


def test_each_kind_of_drift_is_found_and_reported(settings: DatabaseSettings, target: str) -> None:
    clean, _ = db_compare.drift_of(settings, target)
    assert clean == []

    execute(
        settings,
        target,
        "DROP INDEX scheduled_events_patient_idx",
        "ALTER TABLE vital_types ALTER COLUMN plausible_min TYPE numeric",
        "ALTER TYPE symptom_severity ADD VALUE 'extreme'",
        "CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$",
        "GRANT UPDATE ON audit_logs TO rpm_app",
        "CREATE TABLE stray (id int)",
    )
    drifts = by_name(db_compare.drift_of(settings, target)[0])

    index = drifts[("indexes", "scheduled_events_patient_idx")]
    assert index.change is Change.MISSING
    column = drifts[("columns", "vital_types.plausible_min")]
    assert (column.change, column.expected, column.actual) == (
        Change.CHANGED,
        "double precision NOT NULL",
        "numeric NOT NULL",
    )
    enum = drifts[("enums", "symptom_severity")]
    assert enum.change is Change.CHANGED
    assert enum.actual is not None
    assert enum.actual.splitlines()[-1] == "extreme"
    function = drifts[("functions", "set_updated_at()")]
    assert function.change is Change.CHANGED
    assert "clock_timestamp()" in str(function.actual)
    assert "clock_timestamp()" not in str(function.expected)
    assert drifts[("grants", "ON audit_logs")].change is Change.CHANGED
    assert drifts[("relations", "stray")].change is Change.UNEXPECTED
    # Nothing else: a dropped index is one drift, not a cascade of noise (the retyped column's CHECK now
    # compares numeric with double precision, and is reported as changed).
    assert set(drifts) == {
        ("indexes", "scheduled_events_patient_idx"),
        ("columns", "vital_types.plausible_min"),
        ("constraints", "vital_types.vital_types_check"),
        ("enums", "symptom_severity"),
        ("functions", "set_updated_at()"),
        ("grants", "ON audit_logs"),
        ("relations", "stray"),
        ("columns", "stray.id"),
        ("grants", "ON stray"),
    }


def test_the_command_exits_non_zero_with_a_readable_report(
    settings: DatabaseSettings, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    execute(settings, target, "DROP INDEX scheduled_events_patient_idx", "DELETE FROM schema_migrations")
    assert db_compare.main(["--database", target]) == 1
    out = capsys.readouterr().out
    assert "MISSING    indexes      scheduled_events_patient_idx" in out
    assert "MISSING    migrations   0001_foundation.sql" in out
    assert "DRIFT: " in out


def test_the_project_database_matches_the_migrations(settings: DatabaseSettings) -> None:
    drifts, _ = db_compare.drift_of(settings, settings.postgres_db)
    assert drifts == [], render(drifts)


def test_the_report_shows_what_differs() -> None:
    expected = Catalog({"enums": {"mood": "low\nhigh"}, "columns": {"t.c": "integer"}, "indexes": {"t_idx": "X"}})
    actual = Catalog({"enums": {"mood": "low\nhigh\nmanic"}, "columns": {"t.c": "bigint"}, "views": {"v": "Y"}})
    report = render(compare(expected, actual)).splitlines()
    assert report == [
        "CHANGED    columns      t.c",
        "    expected: integer",
        "    found:    bigint",
        "MISSING    indexes      t_idx",
        "    expected: X",
        "CHANGED    enums        mood",
        "    --- migrations",
        "    +++ live",
        "    @@ -2 +2,2 @@",
        "     high",
        "    +manic",
        "UNEXPECTED views        v",
        "    found:    Y",
    ]
