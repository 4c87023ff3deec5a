"""Delivery errors: one base (a kind of `ProcessorError`), `retriable` tells the dispatcher whether to try again."""

from __future__ import annotations

from typing import ClassVar

from processors.errors import ProcessorError

__all__ = [
    "ChannelError",
    "DeliveryError",
    "RefusedTargetError",
    "RejectedError",
    "SignatureError",
    "UnreachableError",
]


class DeliveryError(ProcessorError):
    """Base of every error the delivery package raises on purpose."""

    retriable: ClassVar[bool] = False


class ChannelError(DeliveryError):
    """A channel could not deliver; `reason` is a short stable code stored with the attempt (no PHI)."""

    retriable: ClassVar[bool] = True

    def __init__(self, reason: str, detail: str = "", response_code: int | None = None) -> None:
        self.reason = reason
        self.response_code = response_code
        super().__init__(f"{reason}: {detail}"[:300] if detail else reason)


class UnreachableError(ChannelError):
    """Timeouts, refused connections, 5xx, 429: worth another attempt later."""

    retriable: ClassVar[bool] = True


class RejectedError(ChannelError):
    """The receiver refused the message for good (4xx, unknown address, no target): retrying cannot help."""

    retriable: ClassVar[bool] = False


class RefusedTargetError(RejectedError):
    """A webhook URL points where this service must not send (SSRF guard, `processors.delivery.ssrf`): a scheme
    other than http(s), or an address that is loopback, private, link-local, metadata, multicast, unspecified or
    reserved. `reason` names the class (`url_scheme`, `address_loopback`, ...); never retried."""

    retriable: ClassVar[bool] = False


class SignatureError(DeliveryError):
    """A webhook signature did not verify (receivers raise it); `reason` says why, for their logs."""

    retriable: ClassVar[bool] = False

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
