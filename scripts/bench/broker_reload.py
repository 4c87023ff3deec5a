"""Benchmark: how long a broker reload (every `broker-sync`) stalls Mosquitto, by fleet size and ACL layout.

A private Mosquitto on a free loopback port (its own directory under /var/tmp, removed at the end) gets a password
file of N devices and one of two ACLs:

  user blocks   a `user <serial>` block per device (the layout before the pattern): Mosquitto 2.0 parses and
                applies it in time quadratic in the number of blocks
  pattern       what `python -m ingest broker-sync` writes (ingest.broker_auth.render_acl): one pattern line for
                every device plus a deny block per revoked serial (`--revoked` percent of the fleet)

Each reload is a SIGHUP followed at once by a CONNECT of the service user; the stall is the time to its CONNACK
(the broker's one thread answers nobody while it reloads). Prints the median of `--rounds` reloads in ms.

Usage: .venv/bin/python -m scripts.bench.broker_reload [--fleet 1000 5000 10000 20000] [--rounds 5] [--revoked 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ingest.broker_auth import BrokerUser, hash_password, ingest_user, render_acl, render_password_file
from scripts.chaos.stack import free_port

SERVICE, SECRET = "bench-service", "bench-secret"


def _connack(port: int, timeout_s: float = 120.0) -> None:
    """MQTT 3.1.1 CONNECT as the service user; returns once the broker accepted it."""

    def field(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    body = field(b"MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
    body += field(b"bench-reload") + field(SERVICE.encode()) + field(SECRET.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"\x10" + bytes([len(body)]) + body)
        reply = sock.recv(4)
    if len(reply) != 4 or reply[0] != 0x20 or reply[3] != 0:
        raise RuntimeError(f"the bench broker refused the service user: {reply!r}")


def _old_acl(users: list[BrokerUser], serials: list[str]) -> str:
    lines = [f"user {SERVICE}", "topic read devices/+/readings"]
    for serial in serials:
        lines += [
            "",
            f"user {serial}",
            f"topic write devices/{serial}/readings",
            f"topic write devices/{serial}/status",
        ]
    return "\n".join(lines) + "\n"


def _stall_ms(pid: int, port: int, rounds: int) -> float:
    stalls = []
    for _ in range(rounds):
        os.kill(pid, signal.SIGHUP)
        time.sleep(0.005)  # the signal is handled at the top of the broker's next loop
        start = time.perf_counter()
        _connack(port)
        stalls.append((time.perf_counter() - start) * 1000)
        time.sleep(0.2)
    return statistics.median(stalls)


def measure(fleet: int, layout: str, rounds: int, revoked_pct: float) -> float:
    serials = [f"BENCH-{i:07d}" for i in range(fleet)]
    revoked = serials[: int(fleet * revoked_pct / 100)]
    users = [ingest_user(SERVICE, hash_password(SECRET))]
    device_hash = hash_password("unused", iterations=1)  # never verified here: nothing logs in as a device
    passwd = render_password_file(users) + "".join(f"{s}:{device_hash}\n" for s in serials[len(revoked) :])
    acl = _old_acl(users, serials[len(revoked) :]) if layout == "user blocks" else render_acl(users, revoked)
    base = Path(tempfile.mkdtemp(prefix="rpm-bench-reload-", dir="/var/tmp"))
    port = free_port()
    try:
        (base / "passwd").write_text(passwd)
        (base / "acl").write_text(acl)
        (base / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {base / 'passwd'}\n"
            f"acl_file {base / 'acl'}\nlog_dest none\npersistence false\n"
        )
        subprocess.run(["chown", "-R", "mosquitto:mosquitto", str(base)], check=True)
        broker = subprocess.Popen(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(base / "mosquitto.conf")]
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    _connack(port, timeout_s=5)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            return _stall_ms(broker.pid, port, rounds)
        finally:
            broker.terminate()
            broker.wait(10)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fleet", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--revoked", type=float, default=2.0, help="percent of the fleet revoked (deny blocks)")
    args = parser.parse_args()
    print(f"| devices | user blocks (ms) | pattern + {args.revoked:g} % revoked denied (ms) | ratio |")
    print("|---:|---:|---:|---:|")
    for fleet in args.fleet:
        old = measure(fleet, "user blocks", args.rounds, args.revoked)
        new = measure(fleet, "pattern", args.rounds, args.revoked)
        print(f"| {fleet:,} | {old:,.0f} | {new:,.1f} | {old / max(new, 0.1):,.0f}x |", flush=True)


if __name__ == "__main__":
    main()
