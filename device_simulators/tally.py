"""Counters of a publishing run, live progress lines and the end summary (pure: the clock is injected)."""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from device_simulators.publisher import NOT_AUTHORIZED


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100); NaN for no values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


@dataclass(slots=True)
class Tally:
    """What a run sent and what the broker acknowledged (reason codes >= 0x80 are refusals)."""

    sent: int = 0
    acked: int = 0
    refused: int = 0
    errors: int = 0
    readings_sent: int = 0
    reasons: Counter[int] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))

    def on_ack(self, seq: int, reason: int, latency: float) -> None:
        self.acked += 1
        self.reasons[reason] += 1
        if reason >= 0x80:
            self.refused += 1
        self.latencies.append(latency)

    @property
    def not_authorized(self) -> int:
        return self.reasons[NOT_AUTHORIZED]

    def latency_sample(self, size: int) -> list[float]:
        """Up to `size` latencies (seconds), evenly strided over the run, for plotting a distribution."""
        step = max(1, len(self.latencies) // size)
        return [round(v, 6) for v in self.latencies[::step]]

    def latency_ms(self) -> dict[str, float]:
        values = sorted(self.latencies)
        return {f"p{q:g}": round(percentile(values, q) * 1000, 3) for q in (50, 90, 99, 99.9, 100)}


@dataclass(slots=True)
class Progress:
    """Turns successive snapshots of a Tally into one-line rates."""

    started: float
    _last: tuple[float, int, int] = (0.0, 0, 0)

    def line(self, tally: Tally, now: float, inflight: int) -> str:
        then, sent, acked = self._last if self._last[0] else (self.started, 0, 0)
        dt = max(now - then, 1e-9)
        self._last = (now, tally.sent, tally.acked)
        return (
            f"{now - self.started:7.1f}s  sent {tally.sent:>10,} ({(tally.sent - sent) / dt:>9,.0f}/s)"
            f"  acked {tally.acked:>10,} ({(tally.acked - acked) / dt:>9,.0f}/s)  in flight {inflight:>6,}"
            f"  refused {tally.refused:,}  errors {tally.errors:,}"
        )


def summary(result: dict[str, Any]) -> str:
    """A short human summary of a fleet result (the JSON is the full record)."""
    lat = result["ack_latency_ms"]
    return (
        f"run {result['run_id']}: {result['devices']} devices on {result['connections']} connections,"
        f" {result['readings_per_message']} reading(s)/message\n"
        f"  sent {result['sent']:,} messages ({result['readings_sent']:,} readings) in {result['elapsed_s']:.1f}s"
        f" = {result['sent_per_s']:,.0f} msg/s (target {result['target_rate'] or 'max'})\n"
        f"  acked {result['acked']:,} ({result['acked_per_s']:,.0f}/s), refused by broker {result['refused']:,},"
        f" unacked {result['unacked']:,}, connection errors {result['errors']:,}\n"
        f"  publish->PUBACK ms: p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['p100']}"
    )
