"""Device client certificates (the broker's mutual-TLS listener): revocation through the project CA.

The CA, its index of issued certificates and the CRL belong to scripts/tls.sh (openssl); this adapter only asks it
to revoke a serial's certificates and rewrite the CRL. The broker re-reads the CRL on SIGHUP, which the caller
sends once with the password file and ACL (ingest.broker_sync), so the revoked certificate is refused at its next
TLS handshake.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TLS_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tls.sh"


class CertificateError(RuntimeError):
    """The project CA could not revoke a certificate (openssl or the CA's files failed)."""

    retriable = False


@dataclass(frozen=True, slots=True)
class Revocation:
    """What revoking a serial did: certificates newly revoked (0: none issued, already revoked, or no CA)."""

    serial: str
    revoked: int
    has_ca: bool


def revoke_certificates(serial: str, *, timeout_s: float = 60.0) -> Revocation:
    """Revokes every valid certificate issued to `serial` and rewrites the CRL, without reloading the broker.

    Raises:
        CertificateError: scripts/tls.sh is missing or failed.
    """
    if not TLS_SCRIPT.exists():
        raise CertificateError(f"{TLS_SCRIPT} not found: cannot revoke certificates of {serial}")
    done = subprocess.run(
        ["bash", str(TLS_SCRIPT), "revoke", serial, "--no-reload"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=os.environ.copy(),
    )
    if done.returncode != 0:
        raise CertificateError(f"scripts/tls.sh revoke {serial} failed: {done.stderr.strip()[-500:]}")
    # The script's last line: "revoked <n> certificate(s) of <serial>" or "no CA: ...".
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if last.startswith("no CA"):
        return Revocation(serial, 0, has_ca=False)
    parts = last.split()
    if len(parts) < 2 or parts[0] != "revoked" or not parts[1].isdigit():
        raise CertificateError(f"unexpected output of scripts/tls.sh revoke {serial}: {last!r}")
    return Revocation(serial, int(parts[1]), has_ca=True)
