"""Device status topics (`online`/`offline`, retained or a last will): connection_status and last_seen_at."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ingest.database import as_ingest_error, connect
from ingest.errors import IngestError
from ingest.metrics import Metrics
from ingest.pipeline import Lifecycle
from ingest.settings import IngestSettings

logger = logging.getLogger(__name__)

STATUSES = frozenset({"online", "offline"})
_FLUSH_INTERVAL_S = 0.5
_APPLY = """
UPDATE devices d
   SET connection_status = v.status,
       last_seen_at = CASE WHEN v.seen_at IS NULL THEN d.last_seen_at ELSE greatest(d.last_seen_at, v.seen_at) END
  FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS v(serial, status, seen_at)
 WHERE d.serial = v.serial
"""


@dataclass(slots=True)
class _Status:
    serial: str
    status: str
    seen_at: datetime | None
    done: asyncio.Future[bool]


class StatusTracker:
    """Applies status messages in small coalesced batches; `submit` returns True once applied (then PUBACK)."""

    def __init__(self, settings: IngestSettings, metrics: Metrics, lifecycle: Lifecycle) -> None:
        self._settings = settings
        self._metrics = metrics
        self._life = lifecycle
        self._queue: asyncio.Queue[_Status] = asyncio.Queue(10_000)
        self._conn: asyncpg.Connection | None = None

    async def submit(self, serial: str, payload: bytes, *, retained: bool, received_at: datetime) -> bool:
        """A retained status says how the device is, not when it was seen: it leaves last_seen_at alone."""
        status = payload.decode("utf-8", "replace").strip()
        if status not in STATUSES:
            logger.debug("ignored status %r of %s", status[:20], serial)
            return True
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Status(serial, status, None if retained else received_at, done))
        return await done

    async def run(self) -> None:
        try:
            while not (self._life.drained.is_set() and self._queue.empty()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._life.drained.wait(), _FLUSH_INTERVAL_S)
                await self._flush()
                if self._life.past_deadline():
                    break
        finally:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if not item.done.done():
                    item.done.set_result(False)
            if self._conn is not None:
                self._conn.terminate()

    async def _flush(self) -> None:
        items: list[_Status] = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        if not items:
            return
        latest: dict[str, _Status] = {}
        for item in items:
            latest[item.serial] = item
        rows = sorted(latest.values(), key=lambda s: s.serial)
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await connect(self._settings)
                await self._conn.execute(
                    _APPLY, [r.serial for r in rows], [r.status for r in rows], [r.seen_at for r in rows]
                )
                break
            except Exception as exc:
                error = as_ingest_error(exc)
                if not isinstance(error, IngestError) or not error.retriable or self._life.past_deadline():
                    logger.warning("status update failed: %s", error)
                    for item in items:
                        item.done.set_result(False)
                    return
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(1.0)
        self._metrics.status_updates.inc(len(items))
        for item in items:
            item.done.set_result(True)
