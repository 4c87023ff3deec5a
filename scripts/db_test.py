"""`python -m scripts.db_test [--database NAME]`: is the live database healthy, complete and locked down?

Checks, each printed as one PASS/FAIL line: every migration applied; each role connects (and no service role is
privileged); durability and password settings; the extensions, tables, enums, views, functions, triggers, indexes
and policies the migrations define are all present (the expected names come from migrating a scratch database,
not from a list kept by hand); vital_readings partitions exist from 30 days back to a week ahead; the seed data
is there; the audit log is append-only and audit triggers write it; role privileges (e.g. the ingest role cannot
read password hashes, the app role cannot change audit rows). Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from migrations import runner
from scripts.catalog import Catalog, snapshot
from scripts.database import ROLES, DatabaseSettings, Role, migrated_scratch

Conn = psycopg.Connection[Any]
DAYS_BACK = 30
DAYS_AHEAD = 7
# Sections whose names must all exist in the live database (the full definitions are db-compare's job).
PRESENCE = ("extensions", "relations", "enums", "views", "functions", "triggers", "indexes", "policies")
# (role, table, column or None for the whole table, privilege, whether the role must have it)
PRIVILEGES: tuple[tuple[Role, str, str | None, str, bool], ...] = (
    ("ingest", "users", "password_hash", "SELECT", False),
    ("processor", "users", "password_hash", "SELECT", False),
    ("processor", "users", "two_factor_secret", "SELECT", False),
    ("app", "devices", "credential_hash", "SELECT", False),
    ("app", "audit_logs", None, "UPDATE", False),
    ("app", "audit_logs", None, "DELETE", False),
    ("app", "audit_logs", None, "TRUNCATE", False),
    ("processor", "audit_logs", None, "UPDATE", False),
    ("processor", "audit_logs", None, "DELETE", False),
    ("ingest", "audit_logs", None, "DELETE", False),
    ("ingest", "vital_readings", None, "INSERT", True),
    ("ingest", "vital_readings", None, "UPDATE", False),
    ("ingest", "vital_readings", None, "DELETE", False),
    ("ingest", "ingest_rejections", None, "INSERT", True),
    ("processor", "vital_readings", None, "INSERT", False),
    ("processor", "vital_readings", None, "SELECT", True),
    ("processor", "scheduled_events", None, "INSERT", True),
    ("processor", "adherence_records", None, "UPDATE", True),
    ("processor", "notifications", None, "INSERT", True),
    ("app", "vital_readings", None, "INSERT", False),
    ("app", "patients", None, "SELECT", True),
    ("app", "patient_consents", None, "DELETE", False),
)
# Statements a role must be refused, run for real (inside a transaction that is rolled back).
REFUSED: tuple[tuple[Role, str], ...] = (
    ("ingest", "SELECT password_hash FROM users LIMIT 0"),
    ("app", "UPDATE audit_logs SET details = details WHERE false"),
    ("app", "DELETE FROM audit_logs WHERE false"),
    ("processor", "INSERT INTO vital_readings SELECT * FROM vital_readings WHERE false"),
)


@dataclass(frozen=True, slots=True)
class Result:
    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.check:<28} {self.detail}"


@dataclass(slots=True)
class Target:
    """The database under test, its connections and the reference schema (both read lazily, once)."""

    settings: DatabaseSettings
    database: str
    _expected: Catalog | None = None
    _actual: Catalog | None = None

    def connect(self, role: Role = "owner") -> Conn:
        return psycopg.connect(self.settings.dsn(role, self.database), connect_timeout=10)

    @property
    def expected(self) -> Catalog:
        if self._expected is None:
            with (
                migrated_scratch(self.settings, "dbtest") as scratch,
                psycopg.connect(self.settings.admin_dsn(scratch)) as conn,
            ):
                self._expected = snapshot(conn)
        return self._expected

    @property
    def actual(self) -> Catalog:
        if self._actual is None:
            with self.connect() as conn:
                self._actual = snapshot(conn)
        return self._actual


def check_migrations(target: Target) -> Iterator[Result]:
    try:
        states = runner.status(target.settings.admin_dsn(target.database))
    except runner.MigrationError as exc:
        yield Result("migrations", False, str(exc))
        return
    pending = [m.name for m, applied in states if not applied]
    if pending:
        yield Result("migrations", False, f"{len(pending)} pending: {', '.join(pending)} (run `make migrate`)")
    else:
        yield Result("migrations", True, f"{len(states)} applied, none pending, checksums match")


def check_connections(target: Target) -> Iterator[Result]:
    for role in ROLES:
        name = f"connect as {role}"
        try:
            with target.connect(role) as conn:
                row = conn.execute(
                    "SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
                    " FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
        except psycopg.Error as exc:
            yield Result(name, False, f"{target.settings.user(role)}: {str(exc).strip()}")
            continue
        assert row is not None
        user, superuser, createrole, createdb, bypassrls = row
        powers = [p for p, has in (("SUPERUSER", superuser), ("CREATEROLE", createrole), ("BYPASSRLS", bypassrls))
                  if has]  # fmt: skip
        if role != "owner" and createdb:
            powers.append("CREATEDB")
        yield Result(name, not powers, f"{user}" + (f" has {', '.join(powers)}" if powers else ", no special powers"))


def check_settings(target: Target) -> Iterator[Result]:
    wanted = {"password_encryption": "scram-sha-256", "fsync": "on", "synchronous_commit": "on"}
    with target.connect() as conn:
        for name, value in wanted.items():
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            actual = None if row is None else str(row[0])
            yield Result(f"setting {name}", actual == value, f"{actual} (want {value})")


def check_objects(target: Target) -> Iterator[Result]:
    for section in PRESENCE:
        expected, actual = target.expected.names(section), target.actual.names(section)
        missing = sorted(expected - actual)
        detail = f"{len(expected)} expected, all present"
        if missing:
            detail = f"{len(missing)} of {len(expected)} missing: {', '.join(missing[:8])}"
            detail += " ..." if len(missing) > 8 else ""
        yield Result(f"objects: {section}", not missing, detail)
    with target.connect() as conn:
        invalid = [r[0] for r in conn.execute(
            "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_namespace n ON n.oid = i.relnamespace WHERE n.nspname = 'public' AND NOT x.indisvalid"
        ).fetchall()]  # fmt: skip
    yield Result("objects: valid indexes", not invalid, "none invalid" if not invalid else ", ".join(invalid))


_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def check_partitions(target: Target, today: date | None = None) -> Iterator[Result]:
    today = today or datetime.now(UTC).date()
    with target.connect() as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('public.vital_readings')").fetchone()
        if kind is None:
            yield Result("partitions", False, "vital_readings does not exist")
            return
        if kind[0] != "p":
            yield Result("partitions", True, "vital_readings is a TimescaleDB hypertable: chunks are made on insert")
            return
        bounds = conn.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'public.vital_readings'::regclass"
        ).fetchall()
    ranges = []
    for (bound,) in bounds:
        match = _BOUND.search(str(bound))
        if match:
            ranges.append(tuple(datetime.fromisoformat(v).astimezone(UTC) for v in match.groups()))
    uncovered = []
    for n in range(-DAYS_BACK, DAYS_AHEAD + 1):
        start = datetime.combine(today + timedelta(days=n), datetime.min.time(), UTC)
        end = start + timedelta(days=1)
        if not any(lo <= start and end <= hi for lo, hi in ranges):
            uncovered.append(start.date().isoformat())
    detail = f"every UTC day from {DAYS_BACK} days back to {DAYS_AHEAD} ahead ({len(ranges)} partitions)"
    if uncovered:
        detail = f"no partition for {', '.join(uncovered[:6])}{' ...' if len(uncovered) > 6 else ''}"
        detail += " (ingest creates them: SELECT ensure_vital_reading_partitions())"
    yield Result("partitions", not uncovered, detail)


def check_seed(target: Target) -> Iterator[Result]:
    from scripts import seed

    with target.connect() as conn:
        counts = seed.counts(conn)
    patients = len(seed.ORGS) * seed.PATIENTS_PER_ORG
    wanted = {"organizations": len(seed.ORGS), "patients": patients, "care_plans": patients}
    wrong = [f"{t} {n} (want {wanted[t]})" for t, n in counts.items() if t in wanted and n != wanted[t]]
    wrong += [f"{t} {n}" for t, n in counts.items() if t not in wanted and n == 0]
    detail = ", ".join(f"{t} {n}" for t, n in counts.items())
    yield Result("seed counts", not wrong, detail if not wrong else f"{', '.join(wrong)} (run `make seed`)")


def check_audit(target: Target) -> Iterator[Result]:
    """Append-only audit log and the audit triggers, inside a transaction that is rolled back."""
    with target.connect() as conn:
        conn.execute("INSERT INTO audit_logs (action, entity_type, details) VALUES ('db_test.probe', 'db_test', '{}')")
        for statement in ("UPDATE audit_logs SET details = '{\"x\": 1}' WHERE action = 'db_test.probe'",
                          "DELETE FROM audit_logs WHERE action = 'db_test.probe'", "TRUNCATE audit_logs"):  # fmt: skip
            verb = statement.split()[0]
            try:
                with conn.transaction():
                    conn.execute(statement)
            except psycopg.errors.InsufficientPrivilege as exc:
                yield Result(f"audit log refuses {verb}", True, str(exc).splitlines()[0])
            else:
                yield Result(f"audit log refuses {verb}", False, f"{verb} succeeded for the owner")
        org = conn.execute(
            "INSERT INTO organizations (name, slug) VALUES ('db-test probe', 'db-test-probe-' || txid_current())"
            " RETURNING id"
        ).fetchone()
        assert org is not None
        user = conn.execute(
            "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
            " VALUES (%s, 'probe-' || txid_current() || '@db-test.invalid', 'x', 'patient', 'Probe', 'Patient')"
            " RETURNING id",
            (org[0],),
        ).fetchone()
        assert user is not None
        patient = conn.execute(
            "INSERT INTO patients (organization_id, user_id, mrn, date_of_birth, timezone)"
            " VALUES (%s, %s, 'DBTEST', '1950-01-01', 'UTC') RETURNING id",
            (org[0], user[0]),
        ).fetchone()
        assert patient is not None
        conn.execute("UPDATE patients SET emergency_contact_name = 'Probe Contact' WHERE id = %s", (patient[0],))
        rows = conn.execute(
            "SELECT action, before ->> 'emergency_contact_name', after ->> 'emergency_contact_name' FROM audit_logs"
            " WHERE entity_type = 'patients' AND entity_id = %s ORDER BY occurred_at",
            (patient[0],),
        ).fetchall()
        conn.rollback()
    want = [("patients.insert", None, None), ("patients.update", None, "Probe Contact")]
    yield Result("audit triggers", rows == want, f"a patient insert and update logged {len(rows)} row(s)")


def check_privileges(target: Target) -> Iterator[Result]:
    wrong = []
    with target.connect() as conn:
        for role, table, column, privilege, allowed in PRIVILEGES:
            user = target.settings.user(role)
            if column is None:
                row = conn.execute("SELECT has_table_privilege(%s, %s, %s)", (user, table, privilege)).fetchone()
            else:
                row = conn.execute(
                    "SELECT has_column_privilege(%s, %s, %s, %s)", (user, table, column, privilege)
                ).fetchone()
            if row is None or bool(row[0]) != allowed:
                what = f"{privilege} on {table}{f'.{column}' if column else ''}"
                wrong.append(f"{role} {'lacks' if allowed else 'has'} {what}")
        public = [r[0] for r in conn.execute(
            "SELECT DISTINCT c.relname || ' ' || a.privilege_type FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public', aclexplode(c.relacl) a"
            " WHERE a.grantee = 0 AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1"
        ).fetchall()]  # fmt: skip
        truncate = [r[0] for r in conn.execute(
            "SELECT DISTINCT pg_get_userbyid(a.grantee) || ' on ' || c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public', aclexplode(c.relacl) a"
            " WHERE a.privilege_type = 'TRUNCATE' AND a.grantee <> c.relowner ORDER BY 1"
        ).fetchall()]  # fmt: skip
    yield Result("privileges: role matrix", not wrong, "; ".join(wrong) or f"{len(PRIVILEGES)} rules hold")
    yield Result("privileges: PUBLIC", not public, ", ".join(public) or "PUBLIC holds nothing on any table")
    yield Result("privileges: TRUNCATE", not truncate, ", ".join(truncate) or "only the owner may truncate")
    for role, statement in REFUSED:
        try:
            with target.connect(role) as conn:
                conn.execute(statement)
                conn.rollback()
        except psycopg.errors.InsufficientPrivilege:
            yield Result(f"refused to {role}", True, statement)
        else:
            yield Result(f"refused to {role}", False, f"allowed: {statement}")


CHECKS: dict[str, Callable[[Target], Iterator[Result]]] = {
    "migrations": check_migrations,
    "connections": check_connections,
    "settings": check_settings,
    "objects": check_objects,
    "partitions": check_partitions,
    "seed": check_seed,
    "audit": check_audit,
    "privileges": check_privileges,
}


def run(target: Target, names: list[str] | None = None) -> Iterator[Result]:
    """Runs the named checks (default: all); a check that crashes is a failure, and the others still run."""
    for name in names or list(CHECKS):
        try:
            yield from CHECKS[name](target)
        except (psycopg.Error, runner.MigrationError) as exc:
            yield Result(name, False, f"could not run: {str(exc).strip().splitlines()[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.db_test", description=__doc__)
    parser.add_argument("--database", help="the database to check (default: POSTGRES_DB)")
    parser.add_argument("--only", action="append", choices=list(CHECKS), help="run only this check (repeatable)")
    args = parser.parse_args(argv)
    settings = DatabaseSettings()
    target = Target(settings, args.database or settings.postgres_db)
    print(f"db-test: database {target.database!r} on {settings.postgres_host}:{settings.postgres_port}")
    failed = passed = 0
    for result in run(target, args.only):
        print(result.line(), flush=True)
        failed, passed = failed + (not result.ok), passed + result.ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
