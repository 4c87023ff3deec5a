"""Benchmark: the delivery dispatcher's throughput in a throw-away database (fresh migrations, dropped at the end).

N notifications for M recipients of one organization with one webhook endpoint: each gets an in-app and a signed
webhook delivery to a local aiohttp receiver (127.0.0.1) that verifies every signature. Reports planning and
delivery throughput (deliveries per second), and the per-attempt webhook time, with 1 and with 3 dispatchers
sharing the work (SKIP LOCKED). Rate limits off: this measures the dispatcher and PostgreSQL, not a policy.

Usage: .venv/bin/python -m scripts.bench.delivery [--notifications 2000] [--batch 200] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import psycopg
from aiohttp import web
from psycopg import sql

from migrations.runner import migrate
from migrations.settings import MigrationSettings
from processors.delivery.dispatcher import DispatchConfig, Dispatcher
from processors.delivery.in_app import InAppSender
from processors.delivery.metrics import DeliveryMetrics
from processors.delivery.notification import Channel
from processors.delivery.rate_limit import RateLimits
from processors.delivery.retry import RetryPolicy
from processors.delivery.sender import Sender
from processors.delivery.signing import SIGNATURE_HEADER, verify
from processors.delivery.ssrf import EgressPolicy
from processors.delivery.store import DeliveryStore
from processors.delivery.webhook import WebhookSender
from tests.roles import RoleSettings


@contextmanager
def scratch_database() -> Iterator[str]:
    settings = MigrationSettings()
    name = f"rpm_bench_delivery_{secrets.token_hex(4)}"
    with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate(settings.admin_dsn(name), settings.roles())
        yield name
    finally:
        with psycopg.connect(settings.admin_dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed(dsn: str, notifications: int, recipients: int, url: str, secret: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        org = db.execute("INSERT INTO organizations (name, slug) VALUES ('bench', 'bench') RETURNING id").fetchone()
        assert org is not None
        users = [
            db.execute(
                "INSERT INTO users (organization_id, email, password_hash, role, first_name, last_name)"
                " VALUES (%s, %s, 'x', 'provider', 'B', 'U') RETURNING id",
                (org[0], f"u{i}@bench.test"),
            ).fetchone()[0]  # type: ignore[index]
            for i in range(recipients)
        ]
        db.execute(
            "INSERT INTO webhook_endpoints (organization_id, name, url, secret) VALUES (%s, 'bench', %s, %s)",
            (org[0], url, secret),
        )
        # (COPY is refused under row-level security, forced for the owner too.)
        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO notifications (organization_id, recipient_user_id, type, priority, title, body,"
                " idempotency_key, scheduled_for) VALUES (%s, %s, 'vital_alert', 'critical', 't', 'b', %s, %s)",
                [(org[0], users[i % recipients], f"bench:{i}", "2026-01-01") for i in range(notifications)],
            )


async def run(args: argparse.Namespace) -> None:
    secret = secrets.token_hex(24)
    received = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        body = await request.read()
        verify(secret.encode(), body, request.headers.get(SIGNATURE_HEADER), datetime.now(UTC))
        received += 1
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    roles = RoleSettings()
    print(f"delivery benchmark: {args.notifications} notifications x (in-app + webhook), batch {args.batch}, "
          f"concurrency {args.concurrency}")  # fmt: skip
    for dispatchers in (1, 3):
        received = 0
        with scratch_database() as name:
            seed(roles.dsn("owner", name), args.notifications, 50, f"http://127.0.0.1:{port}/hook", secret)
            pool = await asyncpg.create_pool(roles.url("processor").rsplit("/", 1)[0] + "/" + name, max_size=12)
            metrics = DeliveryMetrics()
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency * 3)) as http:
                senders: dict[Channel, Sender] = {
                    Channel.IN_APP: InAppSender(),
                    # The receiver listens on loopback: the SSRF guard must allow private addresses here.
                    Channel.WEBHOOK: WebhookSender(
                        http, lambda: datetime.now(UTC), policy=EgressPolicy(allow_private=True)
                    ),
                }
                config = DispatchConfig(batch_size=args.batch, concurrency=args.concurrency, lease=timedelta(minutes=5))
                workers = [
                    Dispatcher(
                        DeliveryStore(pool),
                        senders,
                        retry=RetryPolicy(),
                        limits=RateLimits({}),
                        metrics=metrics,
                        clock=lambda: datetime.now(UTC),
                        monotonic=time.monotonic,
                        config=config,
                        rng=random.Random(1),
                    )
                    for _ in range(dispatchers)
                ]
                started = time.perf_counter()
                total = 0
                while True:
                    done = await asyncio.gather(*(w.run_once() for w in workers))
                    total += sum(done)
                    if not any(done):
                        break
                elapsed = time.perf_counter() - started
            async with pool.acquire() as conn:
                attempts = await conn.fetch(
                    "SELECT a.duration_ms FROM delivery_attempts a JOIN notification_deliveries d"
                    " ON d.id = a.delivery_id WHERE d.channel = 'webhook'"
                )
                sent = await conn.fetchval("SELECT count(*) FROM notifications WHERE status = 'sent'")
            await pool.close()
        durations = sorted(r["duration_ms"] for r in attempts)
        p99 = durations[int(len(durations) * 0.99) - 1]
        print(
            f"  {dispatchers} dispatcher(s): {total} deliveries in {elapsed:.2f} s = {total / elapsed:.0f}/s "
            f"({sent} notifications sent, {received} webhook requests verified); webhook attempt "
            f"p50 {statistics.median(durations):.0f} ms, p99 {p99} ms"
        )
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
