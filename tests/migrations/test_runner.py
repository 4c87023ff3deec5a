from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from migrations import runner
from migrations.settings import MigrationSettings


def applied_versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]


def test_empty_database_migrates_to_head_and_rerun_is_a_no_op(
    scratch_db: str, migration_settings: MigrationSettings
) -> None:
    available = runner.discover()
    done = runner.migrate(scratch_db, migration_settings.roles())
    assert [m.version for m, _ in done] == [m.version for m in available]
    assert applied_versions(scratch_db) == [m.version for m in available]

    assert runner.migrate(scratch_db, migration_settings.roles()) == []
    assert all(is_applied for _, is_applied in runner.status(scratch_db))
    with psycopg.connect(scratch_db) as conn:
        checksums: dict[str, str] = dict(conn.execute("SELECT name, checksum FROM schema_migrations").fetchall())
    assert checksums == {m.name: m.checksum for m in available}


def test_an_edited_applied_migration_is_refused(
    scratch_db: str, migration_settings: MigrationSettings, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for m in runner.discover()[:2]:
        shutil.copy(runner.DIRECTORY / m.name, folder / m.name)
    runner.migrate(scratch_db, migration_settings.roles(), runner.discover(folder))

    edited = folder / runner.discover(folder)[1].name
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")

    with pytest.raises(runner.ChecksumMismatchError, match="edited after it was applied") as err:
        runner.migrate(scratch_db, migration_settings.roles(), runner.discover(folder))
    assert err.value.name == edited.name
    with pytest.raises(runner.ChecksumMismatchError):
        runner.status(scratch_db, runner.discover(folder))


def test_a_failing_migration_rolls_back_alone(
    scratch_db: str, migration_settings: MigrationSettings, tmp_path: Path
) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE kept (id int);")
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE dropped (id int); SELECT 1/0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        runner.migrate(scratch_db, migration_settings.roles(), runner.discover(tmp_path))
    assert applied_versions(scratch_db) == [1]
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT to_regclass('kept') IS NOT NULL, to_regclass('dropped') IS NULL").fetchone() == (
            True,
            True,
        )


def test_concurrent_runs_apply_each_migration_once(scratch_db: str, migration_settings: MigrationSettings) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(len(runner.migrate(scratch_db, migration_settings.roles())))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(results) == [0, 0, len(runner.discover())]


@pytest.mark.parametrize(
    ("files", "error"),
    [
        (["1_short.sql"], runner.BadNameError),
        (["0001_Upper.sql"], runner.BadNameError),
        (["0001_a.sql", "0001_b.sql"], runner.DuplicateVersionError),
    ],
)
def test_badly_named_or_duplicate_files_are_refused(
    tmp_path: Path, files: list[str], error: type[runner.MigrationError]
) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(error):
        runner.discover(tmp_path)


def test_a_database_ahead_of_the_files_is_refused(scratch_db: str, migration_settings: MigrationSettings) -> None:
    runner.migrate(scratch_db, migration_settings.roles())
    with pytest.raises(runner.MissingFileError):
        runner.status(scratch_db, runner.discover()[:-1])


def test_role_placeholders_are_quoted_and_unknown_ones_refused() -> None:
    m = runner.Migration(1, "0001_x.sql", "GRANT SELECT ON t TO {{ingest}};")
    assert m.render({"ingest": 'odd"name'}) == 'GRANT SELECT ON t TO "odd""name";'
    with pytest.raises(runner.UnknownRoleError):
        runner.Migration(2, "0002_y.sql", "GRANT SELECT ON t TO {{nobody}};").render({})


def test_cli_migrates_then_reports_up_to_date(scratch_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from migrations.__main__ import main

    name = conninfo_to_dict(scratch_db)["dbname"]
    assert main(["up", "--database", str(name)]) == 0
    assert f"{len(runner.discover())} migration(s) applied" in capsys.readouterr().out
    assert main(["up", "--database", str(name)]) == 0
    assert "database is up to date" in capsys.readouterr().out
    assert main(["status", "--database", str(name)]) == 0
    assert "pending" not in capsys.readouterr().out
