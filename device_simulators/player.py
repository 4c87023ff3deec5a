"""Plays prepared envelopes (a scenario, a faulty stream) over MQTT: one connection per device, in send order.

Every publish is tracked to its PUBACK; the report says how many the broker refused and whether that matches
what each envelope expected (a foreign-topic publish must be refused, nothing else may be). A device the broker
does not let in (stale credentials) is reported, and its messages are skipped. The report also counts what ingest
must conclude, judged at the moment each message is published (a backfill arrives long after its send time, and
ingest judges measurement times against the arrival).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device_simulators.message import Envelope, Expected
from device_simulators.publisher import Broker, ConnectError, Connection
from device_simulators.tally import Tally


@dataclass(slots=True)
class PlayReport:
    published: int = 0
    acked: int = 0
    refused: int = 0
    unexpected: list[tuple[int, int]] = field(default_factory=list)
    unconnected: list[str] = field(default_factory=list)
    skipped: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)
    expected_stored: int = 0  # readings ingest must store, for the published messages as they arrived
    expected_refusals: Counter[str] = field(default_factory=Counter)  # ingest's refusal reasons, likewise

    def expect(self, verdict: Expected) -> None:
        """Counts what ingest must conclude about one published message."""
        self.expected_stored += verdict.stored
        if verdict.broker_denied:
            return
        if verdict.message_reason is not None:
            self.expected_refusals[verdict.message_reason] += 1
        self.expected_refusals.update(r for r in verdict.reading_reasons if r is not None)

    @property
    def as_expected(self) -> bool:
        return not self.unexpected and not self.skipped and self.acked == self.published


async def play(
    envelopes: Sequence[Envelope],
    passwords: Mapping[str, str],
    broker: Broker,
    *,
    speed: float = 0.0,
    window: int = 200,
    client_prefix: str = "sim",
    drain_s: float = 30.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    report: PlayReport | None = None,
) -> PlayReport:
    """Publishes each envelope from its sender's connection.

    With `speed` 0 everything goes out as fast as the windows allow; with `speed` k > 0 an envelope is sent
    when (send_at - first send_at) / k real seconds have passed (k = 1 is real time). Pass `report` to watch it
    fill while the play runs; `clock` is the wall clock the expected verdicts are judged at.
    """
    report = report if report is not None else PlayReport()
    expected_denied: dict[int, bool] = {}

    def on_ack(index: int, reason: int, latency: float) -> None:
        report.tally.on_ack(index, reason, latency)
        report.acked += 1
        refused = reason >= 0x80
        report.refused += refused
        if refused != expected_denied[index]:
            report.unexpected.append((index, reason))

    connections = {
        serial: Connection(f"{client_prefix}-{serial}", serial, passwords[serial], on_ack=on_ack, window=window)
        for serial in sorted({e.serial for e in envelopes})
    }
    outcomes = await asyncio.gather(*(c.connect(broker) for c in connections.values()), return_exceptions=True)
    for (serial, _), failure in zip(list(connections.items()), outcomes, strict=True):
        if isinstance(failure, ConnectError):
            report.unconnected.append(serial)
            del connections[serial]
        elif isinstance(failure, BaseException):
            raise failure
    try:
        started = time.monotonic()
        first = envelopes[0].send_at if envelopes else None
        for index, env in enumerate(envelopes):
            if speed > 0 and first is not None:
                delay = (env.send_at - first).total_seconds() / speed - (time.monotonic() - started)
                if delay > 0:
                    await sleep(delay)
            conn = connections.get(env.serial)
            if conn is None:
                report.skipped += 1
                continue
            expected_denied[index] = env.expected.broker_denied
            report.expect(env.on_arrival(clock()))
            await conn.publish(env.topic, env.payload, index)
            report.published += 1
            report.tally.sent += 1
            if env.fault is not None:
                report.faults[env.fault] += 1
        await asyncio.gather(*(c.drain(drain_s) for c in connections.values()))
    finally:
        await asyncio.gather(*(c.close() for c in connections.values()))
    return report
