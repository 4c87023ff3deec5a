"""A dependency-free MQTT 3.1.1 login probe: does the broker accept these credentials right now?"""

from __future__ import annotations

import secrets
import socket
import time


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connack_code(host: str, port: int, username: str | None, password: str | None, timeout: float = 2.0) -> int:
    """Sends CONNECT and returns the CONNACK return code (0 accepted, 4 bad credentials, 5 not authorized)."""
    flags = 0x02  # clean session
    payload = _field(f"probe-{secrets.token_hex(4)}".encode())
    if username is not None:
        flags |= 0x80
        payload += _field(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _field(password.encode())
    body = _field(b"MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big") + payload
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise ConnectionError("broker closed the connection before CONNACK")
            reply += chunk
        if reply[0] != 0x20:
            raise ConnectionError(f"unexpected packet {reply!r}")
        if reply[3] == 0:
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        return reply[3]


def wait_until(host: str, port: int, username: str, password: str, *, accepted: bool, timeout: float = 10.0) -> None:
    """Polls until the broker accepts (or refuses) the login, e.g. after a SIGHUP reload; raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if (connack_code(host, port, username, password) == 0) == accepted:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"broker did not {'accept' if accepted else 'refuse'} {username!r} in {timeout}s")
        time.sleep(0.05)
