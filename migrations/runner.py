"""Applies the ordered SQL files of this package to a database, once each, under an advisory lock.

Files are named `NNNN_description.sql`. Each runs in its own transaction with its version and SHA-256 recorded in
`schema_migrations`; a re-run applies nothing; a file edited after it was applied is refused. Role names in the SQL
are written `{{owner}}`, `{{ingest}}`, `{{processor}}` and `{{app}}` and replaced by the configured names (quoted
as identifiers); the checksum covers the file as written.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psycopg
from psycopg import sql

DIRECTORY = Path(__file__).parent
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_ROLE = re.compile(r"\{\{(\w+)\}\}")
# Any constant shared by every runner of this project; pg_advisory_lock serialises concurrent `migrate` calls.
LOCK_KEY = 0x52504D4D  # "RPMM"


class MigrationError(Exception):
    retriable: ClassVar[bool] = False


class BadNameError(MigrationError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path.name}: migration files are named NNNN_description.sql (lowercase, 4 digits)")


class DuplicateVersionError(MigrationError):
    def __init__(self, version: int, names: Sequence[str]) -> None:
        super().__init__(f"version {version:04d} is used by more than one file: {', '.join(names)}")


class ChecksumMismatchError(MigrationError):
    def __init__(self, name: str, recorded: str, actual: str) -> None:
        self.name = name
        super().__init__(
            f"{name} was edited after it was applied (recorded sha256 {recorded[:12]}…, file {actual[:12]}…). "
            "Applied migrations are immutable: restore the file and add a new migration instead."
        )


class MissingFileError(MigrationError):
    def __init__(self, version: int, name: str) -> None:
        super().__init__(f"the database has {name} (version {version:04d}) applied but no such file exists here")


class UnknownRoleError(MigrationError):
    def __init__(self, name: str, role: str) -> None:
        super().__init__(f"{name}: unknown role placeholder {{{{{role}}}}}")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def render(self, roles: Mapping[str, str]) -> str:
        def role(match: re.Match[str]) -> str:
            try:
                name = roles[match.group(1)]
            except KeyError:
                raise UnknownRoleError(self.name, match.group(1)) from None
            return '"' + name.replace('"', '""') + '"'

        return _ROLE.sub(role, self.sql)


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    checksum: str


def discover(directory: Path = DIRECTORY) -> list[Migration]:
    """The migration files in version order; raises on a bad name or a version used twice."""
    found: dict[int, list[Path]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise BadNameError(path)
        found.setdefault(int(match.group(1)), []).append(path)
    migrations = []
    for version, paths in sorted(found.items()):
        if len(paths) > 1:
            raise DuplicateVersionError(version, [p.name for p in paths])
        migrations.append(Migration(version, paths[0].name, paths[0].read_text()))
    return migrations


def pending(available: Sequence[Migration], applied: Sequence[Applied]) -> list[Migration]:
    """What remains to apply; refuses edited or vanished applied files."""
    by_version = {m.version: m for m in available}
    for a in applied:
        m = by_version.get(a.version)
        if m is None:
            raise MissingFileError(a.version, a.name)
        if m.checksum != a.checksum:
            raise ChecksumMismatchError(m.name, a.checksum, m.checksum)
    done = {a.version for a in applied}
    return [m for m in available if m.version not in done]


_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
)
"""


def applied(conn: psycopg.Connection[tuple[object, ...]]) -> list[Applied]:
    conn.execute(_TABLE)
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version").fetchall()
    return [Applied(int(str(v)), str(n), str(c)) for v, n, c in rows]


def migrate(
    dsn: str, roles: Mapping[str, str], available: Sequence[Migration] | None = None
) -> list[tuple[Migration, float]]:
    """Applies pending migrations; returns each with its duration in seconds. Safe to run concurrently."""
    available = discover() if available is None else available
    done: list[tuple[Migration, float]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            for m in pending(available, applied(conn)):
                started = time.perf_counter()
                body = m.render(roles)
                with conn.transaction():
                    conn.execute(sql.SQL(body))  # a file of this package: trusted, no parameters
                    elapsed = time.perf_counter() - started
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, duration_ms) VALUES (%s, %s, %s, %s)",
                        (m.version, m.name, m.checksum, round(elapsed * 1000)),
                    )
                done.append((m, elapsed))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return done


def status(dsn: str, available: Sequence[Migration] | None = None) -> list[tuple[Migration, bool]]:
    """Every known migration with whether it is applied; raises like `migrate` on drift."""
    available = discover() if available is None else available
    with psycopg.connect(dsn, autocommit=True) as conn:
        todo = {m.version for m in pending(available, applied(conn))}
    return [(m, m.version not in todo) for m in available]
