"""One message over one open aiosmtplib session → an Outcome (never raises)."""

from __future__ import annotations

import aiosmtplib

from postroute.delivery.results import Bounced, Deferred, Outcome, RelayDown, Sent
from postroute.pools.errors import (
    SMTP_CONNECTION_ERROR,
    SMTP_RATE_LIMIT,
    SMTP_REJECTED,
    SMTP_TIMEOUT,
)
from postroute.pools.smtp_client import RelaySession, reply_error_code

SERVICE_CLOSING = 421
QUIT_TIMEOUT = 2.0


async def send_message(smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes) -> Outcome:
    """MAIL, RCPT, DATA for one recipient; the reply decides the outcome.

    A 421 anywhere, a dropped session or a timeout is trouble of the relay, not of the
    message (``RelayDown``); the caller must then discard the session.
    """
    options = mail_options(smtp, sender, recipient, data)
    if isinstance(options, Bounced):
        return options
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    try:
        await smtp.mail(sender, options=options, encoding=encoding)
        await smtp.rcpt(recipient, encoding=encoding)
        reply = await smtp.data(data)
    except aiosmtplib.SMTPResponseException as exc:
        return _from_reply(exc.code, exc.message)
    except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
        return RelayDown(SMTP_TIMEOUT, f"relay did not answer in time: {exc}")
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError) as exc:
        return RelayDown(SMTP_CONNECTION_ERROR, f"session lost: {exc}")
    except aiosmtplib.SMTPException as exc:
        return RelayDown(SMTP_CONNECTION_ERROR, f"SMTP error: {exc}")
    return Sent(reply.code, reply.message)


def mail_options(
    smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes
) -> list[str] | Bounced:
    """``SMTPUTF8`` for non-ASCII addresses, ``BODY=8BITMIME`` for 8-bit content; a relay
    that cannot take what the message needs is a permanent failure for it."""
    options = []
    if not (sender.isascii() and recipient.isascii()):
        if not smtp.supports_extension("smtputf8"):
            return Bounced(553, "5.6.7 the relay does not support SMTPUTF8 (non-ASCII address)")
        options.append("SMTPUTF8")
    if not data.isascii() and smtp.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


def _from_reply(code: int, text: str) -> Outcome:
    """421 and throttling replies (SES ``454 Throttling failure``) are trouble of the relay:
    classified by code *and* text. Other 4xx are this recipient's, retried on the same pool."""
    if code == SERVICE_CLOSING:
        return RelayDown(SMTP_REJECTED, text, smtp_code=code)
    if 400 <= code < 500 and reply_error_code(code, text) == SMTP_RATE_LIMIT:
        return RelayDown(SMTP_RATE_LIMIT, text, smtp_code=code)
    if 400 <= code < 500:
        return Deferred(code, text)
    if code >= 500:
        return Bounced(code, text)
    return Deferred(code, f"unexpected reply: {text}")


def session_usable(outcome: Outcome) -> bool:
    """After a RelayDown the session is in an unknown state: close it."""
    return not isinstance(outcome, RelayDown)


async def reset(smtp: aiosmtplib.SMTP) -> bool:
    """RSET before reusing a session; False when the session is no longer usable."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    return True


async def close(smtp: RelaySession) -> None:
    """QUIT politely, then make sure the socket is released (the TLS goodbye is bounded)."""
    await smtp.aclose(grace=QUIT_TIMEOUT)
