"""`python -m processors.delivery`: run the delivery service (dispatcher + escalator) until SIGTERM.

`python -m processors.delivery endpoints add|list|disable|enable|update|rotate-secret`: configure webhook endpoints
(processors/delivery/endpoints_cli.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from processors.delivery.endpoints import EndpointSettings
from processors.delivery.endpoints_cli import add_endpoint_commands
from processors.delivery.endpoints_cli import run as run_endpoints
from processors.delivery.logs import configure
from processors.delivery.settings import DeliverySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processors.delivery")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--log-format", choices=["text", "json"], help="default: LOG_FORMAT or text")
    commands = parser.add_subparsers(dest="command", metavar="{endpoints}", help="without one: run the service")
    add_endpoint_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "endpoints":
        return run_endpoints(args, EndpointSettings())
    settings = DeliverySettings()
    configure(args.log_level, args.log_format or settings.log_format)
    from processors.delivery.service import serve

    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
