"""Account security functions: encrypted TOTP secrets, hashed one-time backup codes, lockout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import factories
from tests.factories import Organization
from tests.roles import RoleSettings

KEY = "test-encryption-key"


@pytest.fixture
def app(org: Organization) -> Iterator[psycopg.Connection[Any]]:
    """The user-facing role acting for the test's organization (row-level security needs the tenant set)."""
    with psycopg.connect(RoleSettings().dsn("app")) as conn:
        conn.execute("SELECT set_config('rpm.organization_id', %s, false)", (str(org.id),))
        conn.commit()
        conn.autocommit = True
        yield conn


def test_totp_secret_is_stored_encrypted_and_readable_only_with_the_key(
    app: psycopg.Connection[Any], db: psycopg.Connection[Any], org: Organization
) -> None:
    user = factories.create_user(db, org.id)
    app.execute("SELECT user_enable_two_factor(%s, %s, %s)", (user, "JBSWY3DPEHPK3PXP", KEY))
    stored = db.execute("SELECT two_factor_enabled, two_factor_secret FROM users WHERE id = %s", (user,)).fetchone()
    assert stored is not None and stored[0] is True
    assert b"JBSWY3DPEHPK3PXP" not in bytes(stored[1])
    assert app.execute("SELECT user_two_factor_secret(%s, %s)", (user, KEY)).fetchone() == ("JBSWY3DPEHPK3PXP",)
    with pytest.raises(psycopg.errors.ExternalRoutineInvocationException):
        app.execute("SELECT user_two_factor_secret(%s, %s)", (user, "wrong-key"))
    app.execute("SELECT user_disable_two_factor(%s)", (user,))
    assert app.execute("SELECT user_two_factor_secret(%s, %s)", (user, KEY)).fetchone() == (None,)


def test_backup_codes_are_hashed_and_single_use(
    app: psycopg.Connection[Any], db: psycopg.Connection[Any], org: Organization
) -> None:
    user = factories.create_user(db, org.id)
    app.execute("SELECT user_set_backup_codes(%s, %s)", (user, ["alpha-1111", "bravo-2222"]))
    hashes = db.execute("SELECT two_factor_backup_codes FROM users WHERE id = %s", (user,)).fetchone()
    assert hashes is not None and all(h.startswith("$2a$10$") for h in hashes[0])
    assert "alpha-1111" not in hashes[0]
    use = "SELECT user_use_backup_code(%s, %s)"
    assert app.execute(use, (user, "alpha-1111")).fetchone() == (True,)
    assert app.execute(use, (user, "alpha-1111")).fetchone() == (False,)
    assert app.execute(use, (user, "charlie-3333")).fetchone() == (False,)
    assert app.execute(use, (user, "bravo-2222")).fetchone() == (True,)


def test_account_locks_after_repeated_failures_and_success_resets(
    app: psycopg.Connection[Any], db: psycopg.Connection[Any], org: Organization
) -> None:
    user = factories.create_user(db, org.id)
    for _ in range(2):
        assert app.execute("SELECT user_login_failed(%s, 3)", (user,)).fetchone() == (None,)
    assert app.execute("SELECT user_is_locked(%s)", (user,)).fetchone() == (False,)
    locked_until = app.execute("SELECT user_login_failed(%s, 3, interval '10 minutes')", (user,)).fetchone()
    assert locked_until is not None and locked_until[0] is not None
    assert app.execute("SELECT user_is_locked(%s)", (user,)).fetchone() == (True,)
    app.execute("SELECT user_login_succeeded(%s)", (user,))
    row = db.execute(
        "SELECT failed_login_attempts, locked_until, last_login_at IS NOT NULL FROM users WHERE id = %s", (user,)
    ).fetchone()
    assert row == (0, None, True)
