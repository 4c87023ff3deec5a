"""The pipeline's processes under test: `python -m ingest serve` and the Faust worker, as real subprocesses of a
chaos stack, each restartable, killable with SIGKILL, and observable (/readyz, /metrics, RSS)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from scripts.chaos.stack import ROOT, Stack, free_port


@dataclass
class Process:
    """One long-running service; `start` after `kill` resumes it with the same identity (MQTT client id)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    metrics_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="chaos-", suffix=".log")[1]))
    starts: int = 0
    log_offset: int = 0

    def start(self) -> Process:
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no acknowledgement, no goodbye."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, grace_s: float = 15.0) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
        assert self.metrics_port is not None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=timeout_s) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()

    def ready(self, timeout_s: float = 60.0) -> float:
        """Waits for /readyz; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            try:
                if self.get("/readyz")[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready in {timeout_s}s:\n{self.log()[-3000:]}")

    def metric(self, name: str) -> float:
        """The sum of a metric's samples; raises if the process does not answer (a busy loop is slow, not 0)."""
        for attempt in range(5):
            try:
                _, text = self.get("/metrics", timeout_s=10)
                break
            except OSError:
                if attempt == 4:
                    raise
                time.sleep(1)
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def rss_mb(self) -> float:
        if not self.alive:
            return 0.0
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def last_error(self) -> str:
        """The last ERROR line or exception of the log (why a process died), shortened."""
        text = self.log_path.read_bytes()[self.log_offset :].decode(errors="replace")
        lines = [line for line in text.splitlines() if "ERROR" in line or "Error:" in line or "Error(" in line]
        return lines[-1][-240:] if lines else "no error logged"

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def ingest(stack: Stack, *, transport: str = "inline", **settings: str | int | float) -> Process:
    """The ingest service with a fixed MQTT client id (its persistent session survives restarts)."""
    port = free_port()
    env = {
        **stack.env,
        "PROCESSOR_TRANSPORT": transport,
        "INGEST_MQTT_CLIENT_ID": "chaos-ingest-1",
        "INGEST_METRICS_PORT": str(port),
        "INGEST_DB_TIMEOUT_S": "5",
        "INGEST_DB_RETRY_MAX_S": "1",
        "INGEST_RECONNECT_MAX_S": "2",
        "INGEST_RELAY_LEASE_S": "5",
        "INGEST_RELAY_SCAN_INTERVAL_S": "1",
        "INGEST_SHUTDOWN_GRACE_S": "5",
        "KAFKA_READINGS_TOPIC": "chaos-readings",
    }
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return Process("ingest", [sys.executable, "-m", "ingest", "serve"], env, metrics_port=port)


def faust_worker(stack: Stack) -> Process:
    env = {
        **stack.env,
        "PROCESSOR_TOPIC": "chaos-readings",
        "PROCESSOR_APP_ID": "chaos-processors",
        "PROCESSOR_TICK_INTERVAL_S": "0",
    }
    return Process("faust", [sys.executable, "-m", "processors", "faust", "worker", "--without-web"], env)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
