"""Which failures a runner retries and which it must not let block the events behind them.

A failure is retriable when the same work can succeed later unchanged: the database or the network went away
(connection errors, a connection left in a broken protocol state, timeouts) or the server asked for a retry
(serialization failure, deadlock, shutdown, lack of resources). Anything else is deterministic for the events that
caused it (a constraint or data error, a programming bug raised while evaluating one patient): retrying the same
batch fails the same way, so the runners isolate the patient instead (`processors.quarantine`).
"""

from __future__ import annotations

import asyncpg

from processors.errors import ProcessorError

__all__ = ["DATABASE_ERRORS", "describe", "is_retriable"]

# Everything the database adapter may raise. InternalClientError: a connection left in a broken protocol state,
# e.g. PostgreSQL's shutdown notice arrived while it was idle ("cannot switch to state 12; another operation (2) is
# in progress"); a new connection will do.
DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)

# SQLSTATE classes after which the same statement can succeed: connection exceptions, transaction rollbacks
# (serialization failures, deadlocks), insufficient resources, object not in prerequisite state (lock not
# available), operator intervention (shutdown, query cancelled), system errors. The same set as ingest's.
_RETRIABLE_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
# Plus a read-only transaction: connected to a standby during a failover, which is not about the events either.
_RETRIABLE_STATES = frozenset({"25006"})


def is_retriable(exc: BaseException) -> bool:
    """True when running the same batch again can succeed; False for a failure its events will always cause."""
    if isinstance(exc, ProcessorError):
        return exc.retriable
    if isinstance(exc, asyncpg.PostgresError):
        # Also asyncpg's client-side DataError (an argument it cannot encode: SQLSTATE 22000).
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return (
            isinstance(exc, asyncpg.PostgresConnectionError)
            or sqlstate[:2] in _RETRIABLE_CLASSES
            or sqlstate in _RETRIABLE_STATES
        )
    return isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError | TimeoutError)


def describe(exc: BaseException) -> str:
    """The failure's class, SQLSTATE and constraint, for logs: never its message (it may quote values)."""
    cause = exc.__cause__ if isinstance(exc, ProcessorError) and exc.__cause__ is not None else exc
    parts = [type(cause).__name__]
    if sqlstate := getattr(cause, "sqlstate", None):
        parts.append(f"sqlstate {sqlstate}")
    if constraint := getattr(cause, "constraint_name", None):
        parts.append(f"constraint {constraint}")
    return ", ".join(parts)
