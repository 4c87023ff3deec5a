"""`python -m scripts.db_compare [--database NAME]`: does the live database match what the migrations define?

Migrates a scratch database with migrations/runner.py, snapshots both catalogs (tables, columns and types,
defaults, constraints, indexes, enums and their labels, views, functions and their bodies, triggers, policies,
grants) and prints every difference. Exit status: 0 no drift, 1 drift, 2 the comparison could not run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import psycopg

from migrations import runner
from scripts.catalog import Catalog, snapshot
from scripts.database import DatabaseSettings, migrated_scratch
from scripts.drift import Change, Drift, compare, render, summary


def migration_drift(dsn: str) -> list[Drift]:
    """Migrations not applied to the database (or edited after they were), as drift of section 'migrations'."""
    try:
        states = runner.status(dsn)
    except runner.MigrationError as exc:
        return [Drift("migrations", "schema_migrations", Change.CHANGED, "the files of this checkout", str(exc))]
    return [Drift("migrations", m.name, Change.MISSING, "applied", None) for m, applied in states if not applied]


def read_catalog(dsn: str) -> Catalog:
    conn: psycopg.Connection[Any]
    with psycopg.connect(dsn) as conn:
        return snapshot(conn)


def drift_of(settings: DatabaseSettings, database: str) -> tuple[list[Drift], str]:
    """The drift of `database` from the migrations, and the name of the scratch database used as reference."""
    with migrated_scratch(settings, "compare") as scratch:
        expected = read_catalog(settings.admin_dsn(scratch))
    live_dsn = settings.admin_dsn(database)
    return migration_drift(live_dsn) + compare(expected, read_catalog(live_dsn)), scratch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.db_compare", description=__doc__)
    parser.add_argument("--database", help="the database to check (default: POSTGRES_DB)")
    args = parser.parse_args(argv)
    settings = DatabaseSettings()
    database = args.database or settings.postgres_db
    try:
        drifts, scratch = drift_of(settings, database)
    except (psycopg.Error, runner.MigrationError) as exc:
        print(f"db-compare: could not compare: {exc}", file=sys.stderr)
        return 2
    print(f"db-compare: database {database!r} against the migrations (applied to scratch database {scratch!r})")
    if not drifts:
        print("no drift: the database matches the migrations")
        return 0
    print(render(drifts))
    print(f"DRIFT: {summary(drifts)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
