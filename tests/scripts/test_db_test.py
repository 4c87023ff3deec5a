"""db-test passes on a sound database and fails, with clear lines, on a broken one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ingest.settings import IngestSettings
from scripts import db_test, seed
from scripts.database import DatabaseSettings, migrated_scratch


@pytest.fixture(scope="module")
def settings() -> DatabaseSettings:
    return DatabaseSettings()


@pytest.fixture
def scratch(settings: DatabaseSettings) -> Iterator[str]:
    with migrated_scratch(settings, "dbtest_target") as name:
        yield name


def failures(settings: DatabaseSettings, database: str, *only: str) -> dict[str, str]:
    results = list(db_test.run(db_test.Target(settings, database), list(only) or None))
    assert results, "no check ran"
    return {r.check: r.detail for r in results if not r.ok}


def test_a_freshly_migrated_database_passes_every_check_but_the_seed(settings: DatabaseSettings, scratch: str) -> None:
    failed = failures(settings, scratch)
    assert list(failed) == ["seed counts"]
    assert "run `make seed`" in failed["seed counts"]


def test_a_broken_database_fails_each_affected_check(
    settings: DatabaseSettings, scratch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y%m%d")
    conn: psycopg.Connection[Any]
    with psycopg.connect(settings.admin_dsn(scratch), autocommit=True) as conn:
        for statement in (
            "DROP INDEX scheduled_events_open_due_idx",
            "DROP TRIGGER audit_logs_no_update_delete ON audit_logs",
            "DROP TRIGGER patients_audit ON patients",
            f"DROP TABLE vital_readings_{tomorrow}",
            f"GRANT UPDATE ON audit_logs TO {settings.postgres_user}",
            f"GRANT SELECT (password_hash) ON users TO {settings.postgres_ingest_user}",
        ):
            conn.execute(statement)

    failed = failures(settings, scratch)
    assert set(failed) == {
        "objects: indexes",
        "objects: triggers",
        "partitions",
        "seed counts",
        "audit log refuses UPDATE",
        "audit log refuses DELETE",
        "audit triggers",
        "privileges: role matrix",
        "refused to ingest",
        "refused to app",
    }
    assert "scheduled_events_open_due_idx" in failed["objects: indexes"]
    assert "audit_logs.audit_logs_no_update_delete" in failed["objects: triggers"]
    assert "patients.patients_audit" in failed["objects: triggers"]
    assert f"{tomorrow[:4]}-{tomorrow[4:6]}-{tomorrow[6:]}" in failed["partitions"]
    assert "ingest has SELECT on users.password_hash" in failed["privileges: role matrix"]
    assert "app has UPDATE on audit_logs" in failed["privileges: role matrix"]

    assert db_test.main(["--database", scratch, "--only", "objects"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  objects: indexes" in out
    assert "PASS  objects: enums" in out
    assert out.rstrip().endswith("failed")


def test_the_seeded_project_database_passes_the_seed_check(
    settings: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seed, "CREDENTIALS", tmp_path / "device_credentials.json")
    with psycopg.connect(settings.admin_dsn(), autocommit=True) as conn:
        seed.seed(conn, IngestSettings())
    assert failures(settings, settings.postgres_db, "seed", "partitions", "audit", "privileges") == {}
