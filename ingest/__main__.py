"""`python -m ingest <command>`: the ingest service and its admin commands."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys

from ingest.settings import IngestSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the ingest service (MQTT -> PostgreSQL -> processors) until SIGTERM")
    sync = commands.add_parser("broker-sync", help="regenerate the broker's password file and ACL, then reload it")
    sync.add_argument("--no-reload", action="store_true", help="write the files without signalling the broker")
    from ingest import commands as admin

    admin.add_device_commands(commands)
    admin.add_rejection_commands(commands)
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # gmqtt warns once per PUBACK it drops on a closed socket: on purpose, for messages that were not durable.
    logging.getLogger("gmqtt.mqtt.protocol").setLevel(logging.ERROR)
    settings = IngestSettings()
    if args.command == "serve":
        from ingest.service import serve

        # Tens of thousands of in-flight messages (one task and future each) make every full collection walk
        # them all; freezing the startup heap and collecting the young generation less often keeps that off the
        # per-message path (reference cycles are still collected).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        asyncio.run(serve(settings))
        return 0
    if args.command == "broker-sync":
        from ingest.broker_sync import sync_broker

        count = sync_broker(settings, reload=not args.no_reload)
        print(f"broker auth written: {count} active devices")
        return 0
    return admin.run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
