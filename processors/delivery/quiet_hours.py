"""Quiet hours per recipient, in the recipient's own time zone; critical alerts are never delayed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from processors.delivery.notification import Channel, Priority

__all__ = ["QuietHours", "release_at"]


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily wall-clock span [start, end) in `timezone`; it wraps midnight when end < start (22:00-07:00).

    Equal start and end mean no quiet hours. Wall-clock times follow DST: "07:00" is 07:00 local on both sides
    of a change; an end inside a spring-forward gap (02:30) falls on the first instant after it.
    """

    start: time
    end: time
    timezone: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contains(self, at: datetime) -> bool:
        """Whether the instant `at` (timezone-aware) is within quiet hours."""
        local = at.astimezone(self.zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        if self.start > self.end:
            return local >= self.start or local < self.end
        return False

    def end_after(self, at: datetime) -> datetime:
        """The first end of quiet hours strictly after `at`, in UTC."""
        zone = self.zone
        day = at.astimezone(zone).date()
        for offset in range(3):
            candidate = datetime.combine(day + timedelta(days=offset), self.end, tzinfo=zone).astimezone(UTC)
            if candidate > at:
                return candidate
        raise AssertionError("unreachable: an end time recurs daily")  # pragma: no cover


def release_at(quiet: QuietHours | None, priority: Priority, channel: Channel, at: datetime) -> datetime:
    """When a message due at `at` may go out: at once, unless quiet hours hold an interrupting non-critical one."""
    if quiet is None or priority is Priority.CRITICAL or not channel.interrupts or not quiet.contains(at):
        return at
    return quiet.end_after(at)
