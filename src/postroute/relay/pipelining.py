"""SMTP command pipelining (RFC 2920) on an aiosmtplib session.

aiosmtplib sends one command and waits for its reply: a message costs five round trips
on a reused session (RSET, MAIL, RCPT, DATA, the content). When the relay advertises
PIPELINING, :func:`transaction` sends RSET, MAIL, RCPT and DATA as one group and the
content as a second: two round trips, which matters for a relay across the internet
(latency) and on loopback (CPU: every write wakes both ends).

aiosmtplib's protocol reads one reply per command and drops bytes that arrive while a
parsed reply is waiting to be picked up, so a pipelined group needs a protocol that keeps
them: :func:`enable` gives an open session's protocol that behaviour (the subclass only
adds; outside :meth:`PipeliningProtocol.exchange` it behaves exactly as aiosmtplib's).
aiosmtplib is pinned: the subclass uses its protocol's buffer, reply waiter and parser.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import aiosmtplib
from aiosmtplib.protocol import (
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
MAX_BUFFERED = 8 * MAX_RESPONSE_LENGTH  # a group has at most five replies


class Exchange(NamedTuple):
    """What came of :meth:`PipeliningProtocol.exchange`."""

    replies: list[aiosmtplib.SMTPResponse]  # the replies read, in order
    error: Exception | None  # what ended the exchange early (session lost, timeout...)
    content_sent: bool  # the content was written: the relay may have it, reply or not


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol, plus groups of commands written at once."""

    _pipelining = False

    def data_received(self, data: bytes) -> None:
        waiter = self._response_waiter
        if self._pipelining and waiter is not None and waiter.done():
            # The reply to the next command of the group, while the previous one waits
            # to be picked up: keep it (aiosmtplib would drop it), within reason.
            self._buffer.extend(data)
            if len(self._buffer) > MAX_BUFFERED and self.transport is not None:
                self._buffer.clear()
                self.transport.close()  # the next read fails: the session is dropped
            return
        super().data_received(data)

    async def exchange(
        self, commands: list[bytes], content: bytes | None, reply_timeout: float | None
    ) -> Exchange:
        """Write ``commands`` (the last may be DATA) at once and read their replies in order.
        When every reply is a success and the last is 354, send ``content`` (as given to
        :func:`content_for_data`) and read its reply too.

        Returns the replies read, the error that ended the exchange early (session lost,
        timeout, malformed reply), if any, and whether the content was written: the
        replies tell what was accepted."""
        if self._command_lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        for command in commands:
            if _CONTROL.search(command):
                raise ValueError("SMTP command contains a control character")
        replies: list[aiosmtplib.SMTPResponse] = []
        sent = False
        async with self._command_lock:
            self._pipelining = True
            try:
                self._response_pending = True
                self.write(b"".join(c + b"\r\n" for c in commands))
                for _ in commands:
                    replies.append(await self._next_reply(reply_timeout))
                if (
                    content is not None
                    and replies[-1].code == 354
                    and all(r.code < 400 for r in replies[:-1])
                ):
                    self._response_pending = True
                    self.write(content)
                    sent = True
                    replies.append(await self._next_reply(reply_timeout))
                if self._buffer:  # more than was asked for: the session is out of step
                    raise aiosmtplib.SMTPResponseException(-1, "unexpected data from the relay")
            except (aiosmtplib.SMTPException, OSError) as exc:
                return Exchange(replies, exc, sent)
            finally:
                self._pipelining = False
        return Exchange(replies, None, sent)

    async def _next_reply(self, reply_timeout: float | None) -> aiosmtplib.SMTPResponse:
        waiter = self._response_waiter
        if waiter is None or not waiter.done():  # (None: the connection is gone)
            buffered = self._read_response_from_buffer()  # read with an earlier reply
            if buffered is not None:
                return buffered
        return await self.read_response(timeout=reply_timeout)


def content_for_data(data: bytes) -> bytes:
    """The message as sent after 354: CRLF line ends, leading dots doubled, ``.`` line.

    aiosmtplib's normalisation and dot-stuffing, each only when the message needs it:
    prepared messages already have CRLF line ends and rarely a line starting with a dot,
    and counting bytes costs a fraction of a regex substitution over the whole message."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf or not data.endswith(b"\r\n"):
        data = normalize_message_line_endings(data)
    if data.startswith(b".") or b"\n." in data:
        data = PERIOD_REGEX.sub(b"..", data)
    return data + b".\r\n"


def enable(smtp: aiosmtplib.SMTP) -> PipeliningProtocol | None:
    """The session's protocol, able to pipeline, when the relay offers PIPELINING."""
    if not smtp.supports_extension("pipelining"):
        return None
    return upgrade(smtp)


def upgrade(smtp: aiosmtplib.SMTP) -> PipeliningProtocol | None:
    """The session's protocol with :meth:`~PipeliningProtocol.exchange` (None when the
    session is closed). One command at a time is plain SMTP: a relay without PIPELINING
    gets its DATA and content this way too, which tells whether the content went out."""
    protocol = smtp.protocol
    if protocol is None:
        return None
    if type(protocol) is SMTPProtocol and protocol.transport is not None:
        protocol.__class__ = PipeliningProtocol  # same layout: it only adds behaviour
        # uvloop's transports keep the protocol's bound methods: hand it over again.
        protocol.transport.set_protocol(protocol)
    return protocol if isinstance(protocol, PipeliningProtocol) else None
