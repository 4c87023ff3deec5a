"""What a supervisor does with the Faust worker when it exits: restart it after its stall/gap watchdog's exit
(EXIT_STALLED, by design: the restart re-reads from the committed offsets), and give up on any other exit.

Pure, so that the tests' harness and the benchmark apply one policy to their own kind of subprocess.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# processors.faust_app.EXIT_STALLED (importing that module configures a Faust app in the importing process).
EXIT_STALLED = 70


class Verdict(StrEnum):
    RUNNING = "running"
    RESTART = "restart"
    DIED = "died"


@dataclass(slots=True)
class Supervision:
    """Restarts counted and the exit status that ended supervision (None while the worker is supervised)."""

    restarts: int = 0
    exit_status: int | None = None

    def judge(self, returncode: int | None) -> Verdict:
        """The verdict on a worker whose `returncode` is polled now (None: still running); counts a restart."""
        if self.exit_status is not None:
            return Verdict.DIED
        if returncode is None:
            return Verdict.RUNNING
        if returncode == EXIT_STALLED:
            self.restarts += 1
            return Verdict.RESTART
        self.exit_status = returncode
        return Verdict.DIED

    @property
    def died(self) -> bool:
        return self.exit_status is not None
