"""What the database says about itself: tenant-owned tables, views, columns and privileges, read from the catalog.

Tests are generated from these answers, so a table or grant added later is covered without editing the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True, slots=True)
class TenantTable:
    """A table whose rows belong to one organization, named by `key` (organizations: its own id)."""

    name: str
    key: str
    rls_enabled: bool
    rls_forced: bool


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    roles: tuple[str, ...]
    command: str
    using: str | None
    check: str | None


def tenant_tables(conn: Conn) -> list[TenantTable]:
    """Every table in `public` with an organization_id column (partitions excepted), and organizations."""
    rows = conn.execute(
        """
        SELECT c.relname, CASE WHEN c.relname = 'organizations' THEN 'id' ELSE 'organization_id' END,
               c.relrowsecurity, c.relforcerowsecurity
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND (c.relname = 'organizations'
                OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                              AND a.attname = 'organization_id' AND NOT a.attisdropped))
         ORDER BY c.relname
        """
    ).fetchall()
    return [TenantTable(str(r[0]), str(r[1]), bool(r[2]), bool(r[3])) for r in rows]


def partitions(conn: Conn) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relispartition ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def tenant_views(conn: Conn) -> list[str]:
    """Views in `public` with an organization_id column."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'organization_id')
         ORDER BY 1
        """
    ).fetchall()
    return [str(r[0]) for r in rows]


def policies(conn: Conn, table: str) -> list[Policy]:
    rows = conn.execute(
        "SELECT policyname, roles::text[], cmd, qual, with_check FROM pg_policies"
        " WHERE schemaname = 'public' AND tablename = %s ORDER BY policyname",
        (table,),
    ).fetchall()
    return [Policy(str(r[0]), tuple(r[1]), str(r[2]), r[3], r[4]) for r in rows]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    generated: bool


def columns(conn: Conn, table: str) -> list[Column]:
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '' OR a.attidentity = 'a'
          FROM pg_attribute a
         WHERE a.attrelid = to_regclass('public.' || quote_ident(%s)) AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
        """,
        (table,),
    ).fetchall()
    return [Column(str(r[0]), str(r[1]), bool(r[2])) for r in rows]


def relations(conn: Conn) -> list[str]:
    """Every table, view and sequence in `public`, partitions included."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


def privileges(conn: Conn, role: str) -> dict[str, dict[str, frozenset[str] | None]]:
    """What `role` may do, per relation: privilege -> None for the whole table, or the set of columns.

    Only SELECT, INSERT, UPDATE, DELETE; TRUNCATE, REFERENCES and TRIGGER are checked separately (nobody has them).
    One statement, so a relation that other sessions create or drop meanwhile cannot break it.
    """
    rows = conn.execute(
        """
        SELECT c.relname, p.privilege, has_table_privilege(%(role)s, c.oid, p.privilege),
               ARRAY(SELECT a.attname::text FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND p.privilege <> 'DELETE'
                        AND has_column_privilege(%(role)s, c.oid, a.attnum, p.privilege)
                      ORDER BY 1)
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN unnest(%(privileges)s::text[]) AS p (privilege)
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
        """,
        {"role": role, "privileges": list(PRIVILEGES)},
    ).fetchall()
    found: dict[str, dict[str, frozenset[str] | None]] = {}
    for relation, privilege, whole, cols in rows:
        if whole:
            found.setdefault(str(relation), {})[str(privilege)] = None
        elif cols:
            found.setdefault(str(relation), {})[str(privilege)] = frozenset(cols)
    return found
