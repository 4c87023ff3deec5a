"""The processors' error tree: one base, a few subclasses; `retriable` tells a runner whether to try again."""

from __future__ import annotations

from typing import ClassVar


class ProcessorError(Exception):
    """Base of every error the processors raise on purpose."""

    retriable: ClassVar[bool] = False


class BadEventError(ProcessorError):
    """An event that is not a committed reading or tick: retrying cannot help; it is logged and skipped."""

    retriable: ClassVar[bool] = False


class StoreError(ProcessorError):
    """The database refused or could not take a batch of outputs; the whole batch is retried."""

    retriable: ClassVar[bool] = True


class StateError(ProcessorError):
    """A stored engine state could not be read back (e.g. written by an incompatible version)."""

    retriable: ClassVar[bool] = False


class BatchRefusedError(ProcessorError):
    """The database refused a batch for a reason retrying cannot fix (a constraint or data error): the runner
    isolates the patient(s) whose events cause it (`processors.quarantine`)."""

    retriable: ClassVar[bool] = False
