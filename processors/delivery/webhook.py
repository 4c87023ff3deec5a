"""Signed webhook delivery over HTTP(S) with aiohttp (see `signing` for the headers and how to verify them).

Every URL passes the SSRF guard (`processors.delivery.ssrf`) before each attempt, and the session should come from
`ssrf.guarded_session` so that the addresses a name resolves to are checked too.
"""

from __future__ import annotations

import aiohttp

from processors.delivery.content import webhook_body
from processors.delivery.errors import RejectedError, UnreachableError
from processors.delivery.sender import Job, WebhookTarget
from processors.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from processors.delivery.ssrf import EgressPolicy, check_url
from processors.delivery.timing import Clock

__all__ = ["ATTEMPT_HEADER", "WebhookSender", "classify_status"]

ATTEMPT_HEADER = "X-RPM-Delivery-Attempt"
USER_AGENT = "rpm-telemetry-delivery/1"
# Worth retrying: the receiver is busy, down or timed out; every other 4xx is a refusal for good.
_RETRIABLE_STATUS = frozenset({408, 425, 429})


def classify_status(status: int, prefix: str = "http") -> None:
    """Raises the channel error an HTTP status stands for; returns for 2xx."""
    if 200 <= status < 300:
        return
    if status >= 500 or status in _RETRIABLE_STATUS:
        raise UnreachableError(f"{prefix}_{status}", response_code=status)
    raise RejectedError(f"{prefix}_{status}", response_code=status)


class WebhookSender:
    """POSTs the no-PHI JSON body, signed with the endpoint's secrets at send time, with the idempotency key.

    `policy` is the SSRF guard's; the session should be `ssrf.guarded_session(policy)` (its resolver checks the
    resolved addresses; this sender checks the scheme and literal addresses).
    """

    def __init__(
        self, session: aiohttp.ClientSession, clock: Clock, timeout_s: float = 10.0, *, policy: EgressPolicy
    ) -> None:
        self._session = session
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._policy = policy

    async def send(self, job: Job) -> int | None:
        target = job.target
        if not isinstance(target, WebhookTarget):
            raise RejectedError("no_endpoint")
        check_url(target.url, self._policy)
        body = webhook_body(job.notification)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(target.secrets, body, self._clock()),
            IDEMPOTENCY_HEADER: job.notification.idempotency_key,
            ATTEMPT_HEADER: str(job.attempt),
        }
        try:
            async with self._session.post(
                target.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError as exc:
            raise UnreachableError("timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UnreachableError("connection", type(exc).__name__) from exc
        classify_status(status)
        return status
