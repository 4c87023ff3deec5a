"""In-app delivery: the `notifications` row is what the app shows, so delivering it is only a status change."""

from __future__ import annotations

from processors.delivery.sender import Job

__all__ = ["InAppSender"]


class InAppSender:
    async def send(self, job: Job) -> int | None:
        return None
