"""Email delivery over SMTP (aiosmtplib): plain text, no PHI, the idempotency key in a header and the Message-ID."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.policy import SMTP

import aiosmtplib

from processors.delivery.content import email_content
from processors.delivery.errors import RejectedError, UnreachableError
from processors.delivery.sender import EmailTarget, Job

__all__ = ["IDEMPOTENCY_HEADER", "EmailSender", "build_message"]

IDEMPOTENCY_HEADER = "X-RPM-Idempotency-Key"
# Idempotency keys have no spaces to fold at; the SMTP line limit (998) keeps them on one line, unaltered.
_POLICY = SMTP.clone(max_line_length=998)


def build_message(job: Job, sender: str, app_url: str) -> EmailMessage:
    """The email for `job`; the Message-ID is derived from the idempotency key, so redeliveries share it."""
    if not isinstance(job.target, EmailTarget):
        raise RejectedError("no_address")
    content = email_content(job.notification, app_url)
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = job.target.address
    message["Subject"] = content.subject
    digest = hashlib.sha256(job.notification.idempotency_key.encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "rpm.invalid"
    message["Message-ID"] = f"<{digest}@{domain}>"
    message[IDEMPOTENCY_HEADER] = job.notification.idempotency_key
    message.set_content(content.text)
    return message


class EmailSender:
    """Sends through one SMTP relay; 5xx replies are refusals for good, 4xx and network failures are retried."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        app_url: str,
        *,
        timeout_s: float = 10.0,
        start_tls: bool | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._app_url = app_url
        self._timeout = timeout_s
        self._start_tls = start_tls
        self._username = username
        self._password = password

    async def send(self, job: Job) -> int | None:
        message = build_message(job, self._sender, self._app_url)
        try:
            # Sent as bytes flattened with our policy (aiosmtplib would fold long headers its own way).
            responses, _ = await aiosmtplib.send(
                message.as_bytes(),
                sender=self._sender,
                recipients=[str(message["To"])],
                hostname=self._host,
                port=self._port,
                timeout=self._timeout,
                start_tls=self._start_tls,
                username=self._username,
                password=self._password,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [e.code for e in exc.recipients]
            if all(400 <= c < 500 for c in codes):
                raise UnreachableError(f"smtp_{codes[0]}", response_code=codes[0]) from exc
            code = codes[0] if codes else 550
            raise RejectedError(f"smtp_{code}", response_code=code) from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise UnreachableError(f"smtp_{exc.code}", response_code=exc.code) from exc
            raise RejectedError(f"smtp_{exc.code}", response_code=exc.code) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise UnreachableError("smtp_connection", type(exc).__name__) from exc
        del responses
        return 250
