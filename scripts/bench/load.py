"""Starts the load generator (`python -m device_simulators fleet`) as a separate process inside the sandbox, so
its CPU is accounted apart from what it measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from device_simulators.credentials import Fleet, dump_fleet
from scripts.bench.sandbox import ROOT, Sandbox


def write_fleet(box: Sandbox, fleet: Fleet, name: str) -> Path:
    path = box.state_dir / f"{name}.json"
    dump_fleet(fleet, path)
    return path


def start_publisher(
    box: Sandbox,
    credentials: Path,
    out: Path,
    *,
    devices: int,
    rate: float = 0,
    duration: float = 10,
    messages: int | None = None,
    readings: int = 1,
    window: int = 1000,
    multiplex: int = 0,
) -> subprocess.Popen[bytes]:
    """`python -m device_simulators fleet …` against the sandbox broker; its JSON result lands in `out`.

    With `multiplex` N > 0 the devices share N connections as the sandbox's load-generator user."""
    cmd = [
        sys.executable,
        "-m",
        "device_simulators",
        "fleet",
        "--devices",
        str(devices),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--readings",
        str(readings),
        "--window",
        str(window),
        "--json",
        str(out),
    ]
    if messages is not None:
        cmd += ["--messages", str(messages)]
    env = {**box.env, "DEVICE_CREDENTIALS_FILE": str(credentials)}
    if multiplex > 0:
        identity = box.loadgen()
        cmd += ["--multiplex", str(multiplex)]
        env |= {"MQTT_LOADGEN_USER": identity.username, "MQTT_LOADGEN_PASSWORD": identity.password}
    with (box.state_dir / f"{out.stem}.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def result(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(out.read_text())
    return data
