"""One message over one open aiosmtplib session → an Outcome (never raises)."""

from __future__ import annotations

import re
from typing import overload

import aiosmtplib
from aiosmtplib.typing import SMTPStatus

from postroute.relay import pipelining
from postroute.relay.errors import (
    SMTP_CONNECTION_ERROR,
    SMTP_RATE_LIMIT,
    SMTP_REJECTED,
    SMTP_TIMEOUT,
)
from postroute.relay.results import (
    Bounced,
    Deferred,
    Outcome,
    RelayDown,
    Sent,
    UnknownOutcome,
)
from postroute.relay.session import RelaySession, reply_error_code

SERVICE_CLOSING = 421
# Characters that have no place in a path: such an address goes through aiosmtplib's own
# (slower) MAIL/RCPT, which checks and quotes it, never into a pipelined group.
_UNSAFE = re.compile(r'[\s<>"\x00-\x1f\x7f]')
QUIT_TIMEOUT = 2.0


class Stale:
    """The reused session turned out unusable before anything was sent (the relay closed
    it, or refused RSET): open a new session and send again. Not an attempt."""

    def __repr__(self) -> str:
        return "STALE"


STALE = Stale()


@overload
async def send_message(
    smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes
) -> Outcome: ...


@overload
async def send_message(
    smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes, *, reset: bool
) -> Outcome | Stale: ...


async def send_message(
    smtp: aiosmtplib.SMTP, sender: str, recipient: str, data: bytes, *, reset: bool = False
) -> Outcome | Stale:
    """(RSET,) MAIL, RCPT, DATA for one recipient; the reply decides the outcome.

    ``reset``: the session carried an earlier message, so it gets an RSET first. With a
    relay that offers PIPELINING, RSET, MAIL, RCPT and DATA go out as one group and the
    content as a second (RFC 2920): two round trips instead of five.

    A 421 anywhere, a dropped session or a timeout is trouble of the relay, not of the
    message (``RelayDown``); the caller must then discard the session. Once the content
    went out, a lost session or a timeout is ``UnknownOutcome`` instead: the relay may
    have taken the message. ``STALE``: the session was already unusable; nothing was sent.
    """
    if reset and not smtp.is_connected:
        return STALE
    options = mail_options(smtp, sender, recipient, data)
    if isinstance(options, Bounced):
        return options
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    protocol = pipelining.enable(smtp)
    if protocol is not None and not (_UNSAFE.search(sender) or _UNSAFE.search(recipient)):
        mail = b" ".join(
            [b"MAIL FROM:<" + sender.encode(encoding) + b">"] + [o.encode("ascii") for o in options]
        )
        rcpt = b"RCPT TO:<" + recipient.encode(encoding) + b">"
        commands = [b"RSET", mail, rcpt, b"DATA"] if reset else [mail, rcpt, b"DATA"]
        content = pipelining.content_for_data(data)
        replies, error, content_sent = await protocol.exchange(commands, content, smtp.timeout)
        if reset:
            # RSET refused (or no reply at all): the group's content was not sent, as it
            # goes only after replies below 400 to every command.
            if not replies or replies[0].code >= 400:
                smtp.close()
                return STALE
            replies = replies[1:]
        return _outcome(smtp, replies, error, content_sent)
    if reset and not await _rset(smtp):
        return STALE
    try:  # one command at a time; DATA and the content as exchange() sends them
        accepted = [
            await smtp.mail(sender, options=options, encoding=encoding),
            await smtp.rcpt(recipient, encoding=encoding),
        ]
        protocol = pipelining.upgrade(smtp)
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        content = pipelining.content_for_data(data)
        replies, error, content_sent = await protocol.exchange([b"DATA"], content, smtp.timeout)
    except Exception as exc:  # mapped: trouble of the relay, or a reply about this message
        return _from_error(exc)
    return _outcome(smtp, accepted + replies, error, content_sent)


def _outcome(
    smtp: aiosmtplib.SMTP,
    replies: list[aiosmtplib.SMTPResponse],
    error: Exception | None,
    content_sent: bool,
) -> Outcome:
    """MAIL, RCPT, DATA (and the content's) replies: the first failure decides.

    A session whose exchange ended early, or that a relay left waiting for content after
    a refused MAIL or RCPT (354 all the same), is closed here: the next job finds it
    closed and opens another. Content sent without a reply to it is ``UnknownOutcome``."""
    data_mode = len(replies) == 3 and replies[2].code == SMTPStatus.start_input
    if error is not None or data_mode:
        smtp.close()
    for i, reply in enumerate(replies[:3]):  # MAIL, RCPT, DATA
        if reply.code >= 400 or (i == 2 and reply.code != SMTPStatus.start_input):
            return _from_reply(reply.code, reply.message)
    if len(replies) < 4:
        lost = error or aiosmtplib.SMTPServerDisconnected("no reply to DATA")
        return _unknown(lost) if content_sent else _from_error(lost)
    final = replies[3]  # the content's reply decides, even if the session failed after it
    if final.code != SMTPStatus.completed:
        return _from_reply(final.code, final.message)
    return Sent(final.code, final.message)


def _unknown(exc: BaseException) -> UnknownOutcome:
    """The content went out and its reply never came: the relay may have the message."""
    may = "the relay may have taken the message"
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return UnknownOutcome(SMTP_TIMEOUT, f"no reply to the end of data in time; {may}")
    text = str(exc).strip() or type(exc).__name__
    detail = f"session lost after the content was sent, before the relay's reply ({text}); {may}"
    return UnknownOutcome(SMTP_CONNECTION_ERROR, detail)


def _from_error(exc: BaseException) -> Outcome:
    if isinstance(exc, ValueError):  # aiosmtplib refuses to write such an address
        return Bounced(553, f"5.1.3 not a valid SMTP address: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _from_reply(exc.code, exc.message)
    if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
        return RelayDown(SMTP_TIMEOUT, f"relay did not answer in time: {exc}")
    if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError)):
        return RelayDown(SMTP_CONNECTION_ERROR, f"session lost: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        return RelayDown(SMTP_CONNECTION_ERROR, f"SMTP error: {exc}")
    raise exc


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
    """After a RelayDown or an UnknownOutcome the session is in an unknown state: close it."""
    return not isinstance(outcome, RelayDown | UnknownOutcome)


async def _rset(smtp: aiosmtplib.SMTP) -> bool:
    """RSET before reusing a session; False when the session is no longer usable."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    return True


async def close(smtp: RelaySession) -> None:
    """QUIT politely, then make sure the socket is released (the TLS goodbye is bounded)."""
    await smtp.aclose(grace=QUIT_TIMEOUT)
