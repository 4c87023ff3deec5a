"""The whole single-machine pipeline as child processes: ingest (with the inline processors), the processors'
clock and the delivery service. One composition root for `make dev` and `make demo`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ingest.settings import IngestSettings

PY = sys.executable


@dataclass
class Child:
    """A service process; its output goes to a log file (or the terminal when log is None)."""

    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None

    def stop(self, grace: float = 15.0) -> int:
        """SIGTERM (the services drain and exit within their grace period), SIGKILL after `grace` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
        return self.process.returncode


def start(name: str, args: Sequence[str], logs: Path | None, env: dict[str, str]) -> Child:
    log = (logs / f"{name}.log").open("ab") if logs is not None else None
    # Own process group: Ctrl-C in the terminal reaches the supervisor, which stops the children in order.
    process = subprocess.Popen(
        [PY, *args], stdout=log, stderr=subprocess.STDOUT if log else None, env=env, process_group=0
    )
    return Child(name, process, log)


def wait_ready(url: str, child: Child, timeout: float) -> None:
    """Polls an HTTP readiness endpoint; raises if the child exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{child.name} not ready at {url} after {timeout:.0f}s")


def start_pipeline(settings: IngestSettings, env: dict[str, str], logs: Path | None) -> list[Child]:
    """Starts ingest (inline processors), waits until it is ready, then the clock and the delivery service."""
    env = {**env, "PROCESSOR_TRANSPORT": "inline"}
    children: list[Child] = []
    try:
        ingest = start("ingest", ["-m", "ingest", "serve"], logs, env)
        children.append(ingest)
        wait_ready(f"http://{settings.ingest_metrics_host}:{settings.ingest_metrics_port}/readyz", ingest, 60)
        children.append(start("processors-clock", ["-m", "processors", "clock"], logs, env))
        children.append(start("delivery", ["-m", "processors", "delivery"], logs, env))
    except BaseException:
        stop_pipeline(children)
        raise
    return children


def stop_pipeline(children: Sequence[Child]) -> dict[str, int]:
    """Stops the children in reverse start order; returns each one's exit code."""
    return {child.name: child.stop() for child in reversed(children)}
