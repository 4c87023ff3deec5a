"""A tiny HTTP server: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz` (aiohttp)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthServer"]

logger = logging.getLogger(__name__)


class HealthServer:
    """`ready()` returns (ready, reason): /readyz answers 200 or 503 with the reason; /healthz is 200 while up."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, ready: Callable[[], tuple[bool, str]]
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._ready = ready
        self.port: int | None = None
        self.started = asyncio.Event()

    async def run(self, until: asyncio.Event) -> None:
        """Serves until `until` is set."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            addresses = runner.addresses
            self.port = int(addresses[0][1]) if addresses else self._port
            logger.info("metrics and health on http://%s:%s", self._host, self.port)
            self.started.set()
            await until.wait()
        finally:
            await runner.cleanup()

    async def _metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self._ready()
        return web.Response(text=why + "\n", status=200 if ok else 503)
