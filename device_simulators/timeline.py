"""Compressed real time: a scenario's days replayed as a few minutes happening now (pure).

A scenario is written in its own time (days from local midnight). Played as a backfill, every reading arrives long
after it was measured and the processors record its episodes as retrospective: nobody is paged. To show the live
path, `compress` moves the scenario onto the wall clock, `factor` times faster, from `anchor` on: each reading is
stamped with the compressed time it is measured at and sent when that time comes (played at speed 1), so it
arrives within seconds of its measurement and is judged live.

Values are the scenario's own (measured at scenario time); only the timestamps move. Rules that count readings
(k of n, clear count) see the scenario as written; rules that measure time (sustained or quiet minutes, trend
windows, cooldowns, schedules) see it `factor` times shorter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from device_simulators.message import Envelope

__all__ = ["Timeline", "compress"]


@dataclass(frozen=True, slots=True)
class Timeline:
    """Scenario time `origin` happens at wall-clock `anchor`; scenario time runs `factor` times faster."""

    origin: datetime
    anchor: datetime
    factor: float

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"a timeline runs forward: factor {self.factor} <= 0")

    @classmethod
    def fitting(cls, start: datetime, end: datetime, anchor: datetime, duration: timedelta) -> Timeline:
        """The timeline that plays scenario time [start, end) in `duration` of wall-clock time from `anchor`."""
        return cls(start, anchor, (end - start) / duration)

    def at(self, scenario_time: datetime) -> datetime:
        """The wall-clock time of a scenario instant."""
        return self.anchor + (scenario_time - self.origin) / self.factor


def compress(envelopes: Sequence[Envelope], timeline: Timeline) -> list[Envelope]:
    """The clean messages of a scenario moved onto `timeline`: measured_at, sent_at and the send time.

    Only clean streams (no injected fault, each envelope with its message): inject faults after compressing, so
    that their expected verdicts follow the compressed clock.
    """
    out = []
    for env in envelopes:
        if env.fault is not None or env.message is None:
            raise ValueError(f"compress clean streams only: {env.serial} seq {env.seq} has fault {env.fault}")
        message = env.message
        moved = replace(
            message,
            readings=tuple(replace(r, measured_at=timeline.at(r.measured_at)) for r in message.readings),
            sent_at=None if message.sent_at is None else timeline.at(message.sent_at),
        )
        out.append(replace(env, payload=moved.encode(), send_at=timeline.at(env.send_at), message=moved))
    return out
