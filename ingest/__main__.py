"""`python -m ingest <command>`: the ingest service and its admin commands."""

from __future__ import annotations

import argparse
import logging
import sys

from ingest.settings import IngestSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest")
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("broker-sync", help="regenerate the broker's password file and ACL, then reload it")
    sync.add_argument("--no-reload", action="store_true", help="write the files without signalling the broker")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = IngestSettings()
    if args.command == "broker-sync":
        from ingest.broker_sync import sync_broker

        count = sync_broker(settings, reload=not args.no_reload)
        print(f"broker auth written: {count} active devices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
