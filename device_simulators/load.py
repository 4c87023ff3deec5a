"""Load-test messages: valid, unique and cheap to build, numbered by `meta.seq` so every loss is countable.

Each reading of device d, message seq s (from 1), position k has measured_at = origin + ((s-1)*R + k) ms: unique
per (device, type, measured_at), in the past (origin is hours before the run) and well inside the 30-day window.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from device_simulators.message import format_timestamp, readings_topic


@dataclass(frozen=True, slots=True)
class LoadDevice:
    serial: str
    topic: str
    index: int


class LoadMessages:
    """Builds the n-th message of a load-test device as bytes without going through `json`.

    The templates are plain JSON text; tests check every field against docs/protocol.md and ingest's parser.
    """

    def __init__(
        self,
        run_id: str,
        readings_per_message: int,
        origin: datetime,
        *,
        seed: int = 0,
        vital: str = "heart_rate",
        unit: str = "/min",
        step_ms: int = 1,
    ) -> None:
        if not 1 <= readings_per_message <= 500:
            raise ValueError("a message holds 1-500 readings")
        if origin.utcoffset() != timedelta(0):
            raise ValueError("origin must be UTC")
        self.run_id = run_id
        self.readings_per_message = readings_per_message
        self.origin = origin
        self._origin_ms = int(origin.timestamp() * 1000)
        self._step_ms = step_ms
        self._rng = random.Random(seed)
        self._reading_prefix = '{"type":"' + vital + '","value":'
        self._reading_unit = ',"unit":"' + unit + '","measured_at":"'
        self._second_cache: tuple[int, str] = (-1, "")

    def _timestamp(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        if self._second_cache[0] != second:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second_cache = (second, text)
        return f"{self._second_cache[1]}.{milli:03d}Z"

    def measured_at(self, seq: int, position: int = 0) -> datetime:
        offset = ((seq - 1) * self.readings_per_message + position) * self._step_ms
        return self.origin + timedelta(milliseconds=offset)

    def span(self, messages: int) -> timedelta:
        """The measured_at range that `messages` messages of one device cover."""
        return timedelta(milliseconds=messages * self.readings_per_message * self._step_ms)

    def payload(self, seq: int, sent_at_ms: int | None = None) -> bytes:
        """The message with `meta.seq` = seq (from 1); values are 55-99 /min, deterministic with the seed."""
        r = self.readings_per_message
        base = self._origin_ms + (seq - 1) * r * self._step_ms
        randint = self._rng.randint
        readings = ",".join(
            f"{self._reading_prefix}{randint(55, 99)}{self._reading_unit}{self._timestamp(base + k * self._step_ms)}"
            + '"}'
            for k in range(r)
        )
        sent = "" if sent_at_ms is None else f',"sent_at":"{self._timestamp(sent_at_ms)}"'
        return (
            f'{{"message_id":"{self.run_id}:{seq}"{sent},"readings":[{readings}],'
            f'"meta":{{"run":"{self.run_id}","seq":{seq}}}}}'
        ).encode()


def load_devices(serials: list[str]) -> list[LoadDevice]:
    return [LoadDevice(serial, readings_topic(serial), i) for i, serial in enumerate(serials)]


def run_origin(now: datetime, hours_back: float = 12.0) -> datetime:
    """Where a run's measured_at values start: whole seconds, `hours_back` before `now`."""
    return (now - timedelta(hours=hours_back)).astimezone(UTC).replace(microsecond=0)


__all__ = ["LoadDevice", "LoadMessages", "format_timestamp", "load_devices", "run_origin"]
