"""`python -m processors <command>`: the processors' long-running services.

python -m processors clock                  the inline runner's clock and change listener (ticks: missed
                                            checks, silent devices, quiet-time clears); readings come from
                                            ingest's relay in the ingest process (processors.clock)
python -m processors faust worker [...]     the Faust runner (any `faust` worker arguments, e.g. --without-web)
python -m processors delivery [...]         notifications to care teams and escalation (processors.delivery)
python -m processors alerts list|show|ack|assign|resolve [...]   the alert lifecycle (processors.alerts_cli)
python -m processors quarantine list|retry [--json]   events set aside after a failure retrying cannot fix
                                            (processors.quarantine_cli)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from processors.settings import ProcessorSettings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["faust"]:
        # Faust parses its own command line (and configures its own logging).
        from processors.faust_app import app

        # Faust creates its data directory but not the directories above it.
        Path(app.conf.datadir).mkdir(parents=True, exist_ok=True)
        sys.argv = ["processors-faust", *args[1:]]
        app.main()
        return 0
    if args[:1] == ["alerts"]:
        from processors.alerts_cli import main as alerts_main

        return alerts_main(args[1:])
    if args[:1] == ["quarantine"]:
        from processors.quarantine_cli import main as quarantine_main

        return quarantine_main(args[1:])
    if args[:1] == ["delivery"]:
        from processors.delivery.__main__ import main as delivery_main

        return delivery_main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m processors", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", choices=["clock", "faust"])
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=["text", "json"], help="default: LOG_FORMAT or text")
    parsed = parser.parse_args(args)
    settings = ProcessorSettings()
    from processors.clock import serve
    from processors.delivery.logs import configure

    configure(parsed.log_level, parsed.log_format or settings.log_format)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
