"""LISTEN for changes of what the runners cache: requirement versions and patients' contexts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from typing import Any
from uuid import UUID

import asyncpg

from processors.contexts import ContextCache

__all__ = ["CHANNELS", "listen"]

logger = logging.getLogger(__name__)

# The database notifies 'vital_requirements' (migration 0030) for each new or closed version, and
# 'processor_context' (0200, 0510) for care teams, care plans, device assignments, zones and resolved episodes.
CHANNELS = ("vital_requirements", "processor_context")
# InternalClientError: asyncpg's protocol state after the server went away mid-operation (e.g. a PostgreSQL
# restart); the connection is useless, like any other lost connection, and must not end the process.
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


async def listen(
    pool: Any,
    contexts: ContextCache,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    *,
    keepalive: float = 10.0,
    backoff_cap: float = 30.0,
) -> None:
    """Drops a cached context as soon as its patient's data changes, until `stop` is set.

    Holds one pooled connection; reconnects with capped, jittered backoff and then forgets every cached context
    (notifications may have been missed meanwhile). `ready` is set while listening.
    """

    def on_notification(_conn: object, _pid: int, channel: str, payload: str) -> None:
        try:
            patient_id = UUID(json.loads(payload)["patient_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("unexpected notification on %s; dropping every cached context", channel)
            contexts.invalidate()
            return
        contexts.invalidate(patient_id)

    failures = 0
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                for channel in CHANNELS:
                    await conn.add_listener(channel, on_notification)
                contexts.invalidate()
                if ready is not None:
                    ready.set()
                failures = 0
                try:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), keepalive)
                        await conn.execute("SELECT 1")
                finally:
                    if ready is not None:
                        ready.clear()
                    for channel in CHANNELS:
                        with contextlib.suppress(*_ERRORS):
                            await conn.remove_listener(channel, on_notification)
        except _ERRORS as exc:
            failures += 1
            delay = min(backoff_cap, 0.5 * 2**failures) * random.uniform(0.5, 1.0)
            logger.warning("listener lost (%r); reconnecting in %.1f s", exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
