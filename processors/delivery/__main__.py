"""`python -m processors.delivery`: run the delivery service (dispatcher + escalator) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys

from processors.delivery.logs import configure
from processors.delivery.settings import DeliverySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processors.delivery")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    parser.add_argument("--log-format", choices=["text", "json"], help="default: LOG_FORMAT or text")
    args = parser.parse_args(argv)
    settings = DeliverySettings()
    configure(args.log_level, args.log_format or settings.log_format)
    from processors.delivery.service import serve

    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
