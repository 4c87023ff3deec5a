"""The ingest package's errors. `retriable` tells a loop whether trying the same work again can succeed."""

from __future__ import annotations

from typing import ClassVar


class IngestError(Exception):
    retriable: ClassVar[bool] = False


class DatabaseUnavailableError(IngestError):
    """PostgreSQL is unreachable, restarting, overloaded or timed out: the same batch can succeed later."""

    retriable = True


class BatchRefusedError(IngestError):
    """PostgreSQL refused the batch's data itself (a constraint, a value it cannot store): retrying changes nothing."""

    def __init__(self, sqlstate: str | None, message: str) -> None:
        self.sqlstate = sqlstate
        super().__init__(f"{sqlstate or '?'}: {message}")


class SinkUnavailableError(IngestError):
    """The processors' transport (inline engine or Kafka) failed; the outbox keeps the readings."""

    retriable = True
