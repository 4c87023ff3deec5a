"""What the numbers were measured on: CPU, memory, kernel, versions and the durability settings in force."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import version
from typing import Any

import psutil

from scripts.bench.sandbox import ROOT, Sandbox


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mosquitto_version() -> str:
    try:
        out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    return out.splitlines()[0].split()[2] if out else "unknown"


def _code() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (the tree is shared while a run lasts)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "modified": git("diff", "--name-only", "HEAD").split()}


def describe(box: Sandbox) -> dict[str, Any]:
    with box.admin() as conn:
        server = conn.execute("SHOW server_version").fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name IN"
                " ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers',"
                " 'max_wal_size', 'wal_level')"
            ).fetchall()
        )
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": server[0] if server else "unknown",
        "postgresql_settings": settings,
        "mosquitto": _mosquitto_version(),
        "packages": {name: version(name) for name in ("gmqtt", "paho-mqtt", "asyncpg", "psycopg")},
        "code": _code(),
    }
