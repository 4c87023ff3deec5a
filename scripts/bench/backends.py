"""The sandbox database's PostgreSQL backends and their CPU, read from /proc.

PostgreSQL names each backend by process title, `postgres: <user> <database> <host(port)> <activity>`, so the
backends of the sandbox database are found without a query (pg_stat_activity would hide other roles' pids from the
bench's role, which lacks pg_read_all_stats) and without touching the backends other work has open on the shared
server. Their CPU is utime + stime of /proc/<pid>/stat, in clock ticks.

Sampled, not traced: a backend that exits between two samples loses the CPU it used since the last one, and a
backend that appears between samples is counted from zero (its whole life falls in the stage). The server's
writers (WAL writer, checkpointer, background writer) work for every database at once and are not split.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def backend_database(title: str) -> str | None:
    """The database a backend's process title names, or None for a title that is not a backend's (the
    postmaster, the writers, launchers, a title without a database)."""
    words = title.split()
    if len(words) < 4 or words[0] != "postgres:":
        return None
    if words[1].endswith(":"):  # cluster_name is set: "postgres: <cluster>: <user> <database> ..."
        words = words[1:]
    if len(words) < 4 or not (words[3].endswith(")") or words[3] == "[local]"):  # <host(port)> or [local]
        return None
    return words[2]


def cpu_ticks(stat: str) -> int:
    """utime + stime of one /proc/<pid>/stat line. The command name (field 2) may hold spaces and parentheses,
    so fields are counted from its closing parenthesis: utime and stime are fields 14 and 15."""
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


@dataclass(slots=True)
class BackendCpu:
    """CPU ticks of a set of processes over a stage: each pid's ticks at its first sample (0 for a pid that
    appears after the start: its whole life is in the stage) and the most seen since."""

    first: dict[int, int] = field(default_factory=dict)
    latest: dict[int, int] = field(default_factory=dict)

    def start(self, ticks: Mapping[int, int]) -> None:
        """The pids running when the stage starts and their ticks so far (not the stage's)."""
        self.first.update(ticks)
        self.latest.update(ticks)

    def observe(self, ticks: Mapping[int, int]) -> None:
        for pid, value in ticks.items():
            self.first.setdefault(pid, 0)
            self.latest[pid] = max(self.latest.get(pid, 0), value)

    def ticks(self) -> int:
        return sum(self.latest[pid] - first for pid, first in self.first.items())

    def percent(self, seconds: float, ticks_per_s: int = TICKS_PER_S) -> float:
        """CPU % of one core over `seconds` (100 = one core busy throughout)."""
        return round(100 * self.ticks() / ticks_per_s / seconds, 1) if seconds > 0 else 0.0

    @property
    def processes(self) -> int:
        return len(self.first)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # the process exited, or is not ours to read
        return None


def backend_ticks(database: str, pids: Iterable[int] | None = None) -> dict[int, int]:
    """CPU ticks of every running backend of `database` (from /proc; `pids` limits the scan)."""
    out = {}
    for pid in pids if pids is not None else (int(p.name) for p in PROC.iterdir() if p.name.isdigit()):
        title = _read(PROC / str(pid) / "cmdline")
        if title is None or backend_database(title.replace("\0", " ")) != database:
            continue
        stat = _read(PROC / str(pid) / "stat")
        if stat is not None:
            out[pid] = cpu_ticks(stat)
    return out
