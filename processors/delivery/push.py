"""Push delivery through a push gateway (a relay that speaks APNs/FCM/Web Push), by HTTP, with aiohttp.

The gateway contract: `POST {gateway}/v1/push` with JSON `{"platform", "token", "title", "body", "data"}` and an
`Idempotency-Key` header; 2xx means accepted, 404/410 mean the token is no longer valid (the device is then
deactivated), 408/429/5xx are retried, other 4xx are refusals. No external gateway exists in this project's
environments: tests run a local fake gateway that records the requests.
"""

from __future__ import annotations

import json

import aiohttp

from processors.delivery.content import push_content
from processors.delivery.errors import RejectedError, UnreachableError
from processors.delivery.sender import Job, PushTarget
from processors.delivery.signing import IDEMPOTENCY_HEADER
from processors.delivery.webhook import USER_AGENT, classify_status

__all__ = ["UNREGISTERED", "PushSender"]

UNREGISTERED = "unregistered"


class PushSender:
    def __init__(self, session: aiohttp.ClientSession, gateway_url: str, timeout_s: float = 10.0) -> None:
        self._session = session
        self._url = gateway_url.rstrip("/") + "/v1/push"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, job: Job) -> int | None:
        target = job.target
        if not isinstance(target, PushTarget):
            raise RejectedError(UNREGISTERED)
        content = push_content(job.notification)
        body = json.dumps(
            {
                "platform": target.platform,
                "token": target.token,
                "title": content.title,
                "body": content.body,
                "data": content.data,
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            IDEMPOTENCY_HEADER: job.notification.idempotency_key + ":" + str(target.device_id),
        }
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError as exc:
            raise UnreachableError("timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UnreachableError("connection", type(exc).__name__) from exc
        if status in (404, 410):
            raise RejectedError(UNREGISTERED, f"push_{status}", response_code=status)
        classify_status(status, "push")
        return status
