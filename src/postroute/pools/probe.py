"""Connection test of an SMTP pool (`POST /v1/smtp-pools/{id}/test`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from postroute.relay.config import ClientOptions, RelayConfig
from postroute.relay.errors import SMTP_RATE_LIMIT, SMTP_REJECTED
from postroute.relay.session import RelayError, classify, open_session

DEFAULT_SENDER = "postroute-test@localhost"
TEST_SUBJECT = "Postroute SMTP pool test"

_FAILURE_MESSAGES = {
    "smtp_connection_error": "Could not connect to the SMTP relay",
    "smtp_tls_error": "TLS negotiation with the SMTP relay failed",
    "smtp_auth_error": "The SMTP relay refused authentication",
    "smtp_timeout": "The SMTP relay did not answer in time",
    "smtp_rejected": "The SMTP relay rejected the request",
}


@dataclass(frozen=True)
class ProbeResult:
    success: bool
    message: str
    latency_ms: int
    error_code: str | None = None
    error_detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The API reply shape: success, message, latency_ms, error {code, detail} | None."""
        error = None
        if self.error_code is not None:
            error = {"code": self.error_code, "detail": self.error_detail}
        return {
            "success": self.success,
            "message": self.message,
            "latency_ms": self.latency_ms,
            "error": error,
        }


async def probe(
    relay: RelayConfig,
    options: ClientOptions,
    *,
    recipient: str | None = None,
    sender: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """Open a session (and send one test message if `recipient`), then QUIT.

    Never raises for relay trouble: the failure is classified into the result."""
    started = clock()
    try:
        await _session(relay, options, recipient, sender or DEFAULT_SENDER)
    except RelayError as exc:
        return _failure(exc, _elapsed_ms(started, clock))
    latency_ms = _elapsed_ms(started, clock)
    where = f"{relay.host}:{relay.port}"
    if recipient is None:
        message = f"Connected to {where} ({_describe(relay)})"
    else:
        message = f"Test message sent to {recipient} via {where} ({_describe(relay)})"
    return ProbeResult(success=True, message=message, latency_ms=latency_ms)


async def _session(
    relay: RelayConfig, options: ClientOptions, recipient: str | None, sender: str
) -> None:
    smtp = await open_session(relay, options)
    try:
        if recipient is not None:
            try:
                async with asyncio.timeout(options.timeout):
                    await smtp.send_message(
                        build_test_message(sender, recipient), sender=sender, recipients=[recipient]
                    )
            except Exception as exc:
                error = classify(exc)
                raise RelayError(
                    error.code,
                    f"sending test message via {relay.host}:{relay.port}: {error.detail}",
                    smtp_code=error.smtp_code,
                    smtp_message=error.smtp_message,
                ) from None
    finally:
        # A failed goodbye changes nothing: the relay did its part.
        await smtp.aclose(grace=min(options.timeout, 2.0))


def build_test_message(sender: str, recipient: str) -> EmailMessage:
    """The small message sent by a connection test with a recipient."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = TEST_SUBJECT
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = sender.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(
        "This is a test message sent by Postroute to check an SMTP pool.\nNo action is needed.\n"
    )
    return message


def _failure(error: RelayError, latency_ms: int) -> ProbeResult:
    # The test endpoint reports five codes: throttling shows as a rejection.
    code = SMTP_REJECTED if error.code == SMTP_RATE_LIMIT else error.code
    return ProbeResult(
        success=False,
        message=_FAILURE_MESSAGES.get(code, "SMTP relay test failed"),
        latency_ms=latency_ms,
        error_code=code,
        error_detail=error.detail,
    )


def _describe(relay: RelayConfig) -> str:
    mode = {"tls": "STARTTLS", "ssl": "implicit TLS", "none": "no TLS"}[relay.encryption]
    return f"{mode}, authenticated" if relay.username else mode


def _elapsed_ms(started: float, clock: Callable[[], float]) -> int:
    return max(0, round((clock() - started) * 1000))
