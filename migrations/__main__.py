"""`python -m migrations up|status`: apply or list the SQL migrations (as the schema owner)."""

from __future__ import annotations

import argparse
import sys

from migrations.runner import MigrationError, migrate, status
from migrations.settings import MigrationSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m migrations")
    parser.add_argument("command", choices=["up", "status"])
    parser.add_argument("--database", help="database name (default: POSTGRES_DB)")
    args = parser.parse_args(argv)
    settings = MigrationSettings()
    dsn = settings.admin_dsn(args.database)
    try:
        if args.command == "up":
            done = migrate(dsn, settings.roles())
            for m, seconds in done:
                print(f"applied {m.name} ({seconds * 1000:.0f} ms)")
            print(f"{len(done)} migration(s) applied" if done else "database is up to date")
        else:
            for m, is_applied in status(dsn):
                print(f"{'applied' if is_applied else 'pending'}  {m.name}")
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
