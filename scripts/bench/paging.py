"""Publish -> notification latency: a probe device of a monitored patient (scripts.bench.clinic) publishes, at a
steady rate, a message whose first reading breaches the patient's heart-rate requirement and whose second reading
is back in range. The processors open an episode and page the nurse (a `vital_alert` notification, scheduled for
the breaching reading's measurement time), then clear it, so the next probe opens a new episode.

Both the reading's row and the page are polled for every 5 ms from a separate connection, so a latency is the time
from the publish until the committed row (or notification) is visible to a reader: what the delivery service sees.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from device_simulators.credentials import DeviceCredential
from device_simulators.message import Message, Reading, readings_topic
from device_simulators.publisher import Connection
from scripts.bench.clinic import BREACH_VALUE, NORMAL_VALUE
from scripts.bench.sandbox import Sandbox

_POLL_S = 0.005
_ROWS = (
    "SELECT measured_at FROM vital_readings WHERE device_id = $1 AND vital_type_id = $2"
    " AND measured_at = ANY($3::timestamptz[])"
)
_PAGES = (
    "SELECT DISTINCT scheduled_for FROM notifications WHERE patient_id = $1 AND type = 'vital_alert'"
    " AND scheduled_for = ANY($2::timestamptz[])"
)
_RETROSPECTIVE = (
    "SELECT count(*) FROM vital_alerts WHERE patient_id = $1 AND retrospective AND opened_at = ANY($2::timestamptz[])"
)


@dataclass(slots=True)
class Paging:
    """Latencies in seconds (publish->commit and publish->page), the probes whose page never came, and how many
    probes' episodes the processors recorded as retrospective (never paged: judged as not the newest reading)."""

    commit: list[float] = field(default_factory=list)
    page: list[float] = field(default_factory=list)
    sent: int = 0
    retrospective: int = 0

    @property
    def unpaged(self) -> int:
        return self.sent - len(self.page)


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


async def probe_paging(
    box: Sandbox, probe: DeviceCredential, rate: float, duration: float, wait_s: float = 15.0
) -> Paging:
    """Publishes `rate` breach-and-clear messages/s for `duration` s and waits up to `wait_s` more for the pages."""
    assert probe.patient_id is not None
    conn = await box.connect(owner=True)
    device_id = await conn.fetchval("SELECT id FROM devices WHERE serial = $1", probe.serial)
    heart_rate = await conn.fetchval("SELECT id FROM vital_types WHERE code = 'heart_rate'")
    client = Connection(f"paging-{secrets.token_hex(3)}", probe.serial, probe.password, on_ack=lambda *_: None)
    await client.connect(box.broker)
    rows: dict[datetime, float] = {}
    pages: dict[datetime, float] = {}
    out = Paging()
    stop = time.perf_counter() + duration

    async def poll() -> None:
        while time.perf_counter() < stop + wait_s and (rows or pages or time.perf_counter() < stop):
            if rows:
                for row in await conn.fetch(_ROWS, device_id, heart_rate, list(rows)):
                    out.commit.append(time.perf_counter() - rows.pop(row["measured_at"]))
            if pages:
                for row in await conn.fetch(_PAGES, probe.patient_id, list(pages)):
                    out.page.append(time.perf_counter() - pages.pop(row["scheduled_for"]))
            await asyncio.sleep(_POLL_S)

    poller = asyncio.create_task(poll())
    last = _now_ms() - timedelta(seconds=1)
    probes: list[datetime] = []
    try:
        while time.perf_counter() < stop:
            # Strictly increasing measurement times, whole milliseconds (the wire's precision).
            at = max(_now_ms(), last + timedelta(milliseconds=2))
            last = at
            out.sent += 1
            message = Message(
                f"paging:{out.sent}",
                (
                    Reading("heart_rate", BREACH_VALUE, "/min", at),
                    Reading("heart_rate", NORMAL_VALUE, "/min", at + timedelta(milliseconds=1)),
                ),
                meta={"probe": out.sent},
            )
            published = time.perf_counter()
            rows[at] = pages[at] = published
            probes.append(at)
            await client.publish(readings_topic(probe.serial), message.encode(), out.sent)
            await asyncio.sleep(1 / rate)
        await poller
        out.retrospective = int(await conn.fetchval(_RETROSPECTIVE, probe.patient_id, probes))
    finally:
        poller.cancel()
        await client.close()
        await conn.close()
    return out
