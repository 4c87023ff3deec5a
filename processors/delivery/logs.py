"""Log formats: the usual text line, or one JSON object per line for log shippers.

Neither adds anything to what the code logs; the code keeps PHI out of logs above DEBUG (house style), and the
JSON format additionally drops DEBUG records' arguments and truncates messages, so a stray value cannot travel
far. Fields: ts (RFC 3339, UTC), level, logger, message, and exc_type when an exception is attached (the
traceback is kept out: it may print local values).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "configure"]

_MAX_MESSAGE = 1000


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # DEBUG may carry values: keep only its format string.
        message = str(record.msg) if record.levelno <= logging.DEBUG else record.getMessage()
        document = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message[:_MAX_MESSAGE],
        }
        if record.exc_info and record.exc_info[0] is not None:
            document["exc_type"] = record.exc_info[0].__name__
        return json.dumps(document, separators=(",", ":"))


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Configures the root logger (only `__main__` calls this)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
