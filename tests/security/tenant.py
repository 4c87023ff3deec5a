"""How the app role works in one tenant: a transaction with `rpm.organization_id` set locally (SET LOCAL)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg


@contextmanager
def tenant_transaction(
    conn: psycopg.Connection[Any], organization_id: UUID | None, *, actor: UUID | None = None, commit: bool = False
) -> Iterator[psycopg.Connection[Any]]:
    """A transaction on `conn` scoped to one organization (None: no tenant set), rolled back unless `commit`.

    set_config(..., true) is SET LOCAL with a bind parameter: the setting ends with the transaction.
    """
    with conn.transaction(force_rollback=not commit):
        if organization_id is not None:
            conn.execute("SELECT set_config('rpm.organization_id', %s, true)", (str(organization_id),))
        if actor is not None:
            conn.execute("SELECT set_config('rpm.actor_user_id', %s, true)", (str(actor),))
        yield conn
