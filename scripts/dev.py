"""`python -m scripts.dev`: the pipeline in the foreground until Ctrl-C (or SIGTERM), then a clean stop."""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

from ingest.settings import IngestSettings
from scripts.pipeline import start_pipeline, stop_pipeline


def main() -> int:
    settings = IngestSettings()
    stop = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    children = start_pipeline(settings, dict(os.environ), logs=None)
    print(
        f"pipeline running: ingest (inline processors, metrics :{settings.ingest_metrics_port}), processors clock,"
        " delivery. Ctrl-C stops it.",
        flush=True,
    )
    exited = None
    while not stop and exited is None:
        exited = next((c for c in children if c.process.poll() is not None), None)
        time.sleep(0.2)
    if exited is not None:
        print(f"{exited.name} exited with {exited.process.returncode}; stopping the rest", file=sys.stderr)
    codes = stop_pipeline(children)
    print("stopped: " + ", ".join(f"{name} {code}" for name, code in codes.items()), flush=True)
    return 0 if exited is None and all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
