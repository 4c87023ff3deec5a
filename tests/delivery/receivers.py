"""Real local receivers for delivery tests: an aiohttp webhook receiver that verifies signatures and deduplicates
on the idempotency key, a fake push gateway that records requests, and an aiosmtpd SMTP server (all on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from processors.delivery.errors import SignatureError
from processors.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """Answers with `statuses` in turn (then 200); `processed` holds each idempotency key handled once."""

    secret: bytes
    clock: Callable[[], datetime]
    statuses: list[int] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Request(request.path, dict(request.headers), body))
        if self.statuses:
            return web.Response(status=self.statuses.pop(0))
        if request.path.startswith("/hook"):
            try:
                verify(self.secret, body, request.headers.get(SIGNATURE_HEADER), self.clock())
            except SignatureError as exc:
                self.refused.append(exc.reason)
                return web.Response(status=401)
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if key not in self.processed:
            self.processed.append(key)
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Inbox:
    """An SMTP handler: answers DATA with `replies` in turn (then 250) and keeps what it accepted."""

    replies: list[str] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.messages.append(envelope)
        return "250 OK"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self, hostname="localhost"), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def parsed(self) -> list[EmailMessage]:
        """The accepted messages, parsed as a mail client would."""
        out: list[EmailMessage] = []
        for e in self.messages:
            raw: Any = e.original_content or e.content
            message = message_from_bytes(raw if isinstance(raw, bytes) else str(raw).encode(), policy=default)
            assert isinstance(message, EmailMessage)
            out.append(message)
        return out
