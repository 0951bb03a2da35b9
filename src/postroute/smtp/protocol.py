"""One SMTP submission session: aiosmtpd's state machine with Postroute's rules.

What this adds to ``aiosmtpd.smtp.SMTP`` (the decisions on messages are the handler's):

* TLS-ness per listener: on the implicit-TLS listener the session is encrypted from
  the first byte, which aiosmtpd cannot see (see NOTES), so AUTH is allowed there;
* AUTH with an API key, checked asynchronously against the database (aiosmtpd's
  ``authenticator`` is synchronous); a wrong key is a ``535``, never a hang;
* the per-IP connection limit, checked in ``connection_made`` (synchronously, so every
  accepted connection counts, also one closed before its greeting): ``421`` as the
  greeting; a ``421`` before closing on the idle timeout; a ``421`` closes the connection;
* every connection is closed when its session task ends, however early: aiosmtpd
  cancels the task on EOF and leaves the closing to the task's own ``except``, which
  never runs for a task cancelled before its first step (uvloop delivers the EOF of a
  client that closed at once before that step: the socket stayed in CLOSE-WAIT);
* transports used by their methods only (:mod:`postroute.smtp.transports`): uvloop's
  are no subclasses of asyncio's transport classes;
* database lookups of AUTH and of the first MAIL run to their end even when the client
  leaves meanwhile (:func:`transports.finish`);
* DATA read in large chunks (:mod:`postroute.smtp.data`);
* every reply through :func:`replies.rewrite`, so all carry enhanced status codes.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import ssl
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, Protocol

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword, Session, syntax

from postroute.accounts.ip_credentials import client_address
from postroute.accounts.service import AccountContext
from postroute.config import Settings
from postroute.smtp import replies, transports
from postroute.smtp.authenticator import Authenticator
from postroute.smtp.data import read_message
from postroute.smtp.limits import Limits
from postroute.smtp.transports import CLOSE_GRACE, finish, hang_up, open_transport, retrieve


class Listener(Protocol):
    """What a session needs from the listener that made it (``listeners.SmtpServer``)."""

    settings: Settings
    hostname: str
    handler: Any  # aiosmtpd's handler object: its hooks decide what becomes of messages
    limits: Limits
    authenticator: Authenticator

    @property
    def tls_context(self) -> ssl.SSLContext: ...

    def opened(self, session: SubmissionSMTP) -> None: ...

    def closed(self, session: SubmissionSMTP) -> None: ...


log = logging.getLogger("postroute.smtp")

# The stream buffer: commands are still limited by ``smtp_max_command_bytes``; DATA is
# read in chunks of up to this size.
STREAM_LIMIT = 64 * 1024
_DECODED = AuthResult(success=False, handled=True)  # marker: credentials read, not checked


class SubmissionSMTP(SMTP):
    line_length_limit = STREAM_LIMIT

    def __init__(self, server: Listener, *, implicit_tls: bool) -> None:
        self.implicit_tls = implicit_tls
        self.server = server
        settings = server.settings
        super().__init__(
            server.handler,
            data_size_limit=settings.smtp_max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=server.hostname,
            ident="ESMTP Postroute",
            tls_context=None if implicit_tls else server.tls_context,
            timeout=settings.smtp_idle_timeout_seconds,
            auth_require_tls=not implicit_tls,
            loop=asyncio.get_running_loop(),
        )
        limit = settings.smtp_max_command_bytes
        self.command_size_limit = limit
        self.command_size_limits = collections.defaultdict(lambda: limit)  # per session
        self.peer_ip = ""
        self.account: AccountContext | None = None  # after a successful AUTH
        self.ip_account: str | None = None  # account of the client's IP credential
        self.ip_checked = False
        self.transactions = 0  # DATA commands completed on this connection
        self.idle = asyncio.Event()  # cleared while a message is stored and answered
        self.idle.set()
        self._credentials: LoginPassword | None = None
        self._tracked = False
        self._in_data = False  # reading a message after the 354
        # how long a closed connection may take to send what is left, then it is aborted
        self.close_grace = min(CLOSE_GRACE, settings.smtp_idle_timeout_seconds)

    def data_received(self, data: bytes) -> None:
        """Bytes arriving during DATA are activity for the idle timeout, even before a
        chunk of the message is complete (its lines may never end in a dot)."""
        super().data_received(data)
        if self._in_data:
            self._reset_timeout()

    # -- connection ------------------------------------------------------------------------

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def starttls_offered(self) -> bool:
        return self.tls_context is not None and self._tls_protocol is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._tracked:  # again after STARTTLS
            return
        self._tracked = True
        peer = self.session.peer if self.session is not None else None
        address = client_address(str(peer[0])) if isinstance(peer, tuple) else None
        self.peer_ip = str(address) if address is not None else str(peer)
        task = self._handler_coroutine
        assert task is not None
        task.add_done_callback(self._session_ended)
        self.server.opened(self)
        if not self.server.limits.connections.admit(self.peer_ip):
            log.info("SMTP connection from %s refused: too many per minute", self.peer_ip)
            task.cancel()  # before its first step: no 220
            self.say_goodbye(str(replies.S421_TOO_MANY_CONNECTIONS(host=self.hostname)))

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.server.closed(self)

    def _session_ended(self, task: asyncio.Task[None]) -> None:
        """The session task is done (QUIT, EOF, reset, cancelled before it started...):
        the connection ends with it."""
        retrieve(task)
        hang_up(self.transport, self.loop, self.close_grace)

    async def push(self, status: str | bytes) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        text = replies.rewrite(text, max_size=self.data_size_limit or 0)
        await super().push(text)
        if text.startswith("421"):
            hang_up(self.transport, self.loop, self.close_grace)  # RFC 5321 3.8: 421, then close

    def _timeout_cb(self) -> None:
        self.say_goodbye(str(replies.S421_TIMEOUT(host=self.hostname)))

    def say_goodbye(self, reply: str) -> None:
        """Send ``reply`` (a 421) and close, whatever the session is doing."""
        transport = open_transport(self.transport)
        if transport is not None:
            transport.write(reply.encode() + b"\r\n")
            hang_up(self.transport, self.loop, self.close_grace)

    def abort(self) -> None:
        """Drop the connection at once, whatever is unsent (no-op once it is lost)."""
        transports.abort(self.transport)

    @property
    def handler_task(self) -> asyncio.Task[None] | None:
        return self._handler_coroutine

    # -- AUTH ------------------------------------------------------------------------------

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # Called by aiosmtpd's PLAIN/LOGIN decoders, synchronously: keep the credentials
        # for the asynchronous check in _verify.
        self._credentials = auth_data if isinstance(auth_data, LoginPassword) else None
        return _DECODED

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(server, args))

    async def _verify(self, decoded: AuthResult) -> AuthResult:
        credentials, self._credentials = self._credentials, None
        if decoded is not _DECODED or credentials is None:
            return decoded  # aiosmtpd already answered (bad base64, aborted...)
        try:
            check = self.server.authenticator.check_key(self.peer_ip, credentials.password)
            account = await finish(check)
        except Exception as exc:
            log.warning("SMTP AUTH from %s could not be checked: %s", self.peer_ip, type(exc))
            return AuthResult(success=False, handled=False, message=str(replies.S454_AUTH_TEMPFAIL))
        if account is None:
            # handled=False: aiosmtpd then sends the 535 (True would leave the client hanging)
            return AuthResult(success=False, handled=False, message=str(replies.S535_AUTH_INVALID))
        self.account = account
        return AuthResult(success=True, auth_data=account)

    # -- MAIL and RCPT ---------------------------------------------------------------------

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command == "MAIL" and self.account is None and not self.ip_checked:
            # the first MAIL may look the client's IP credential up in the database
            return await finish(super()._call_handler_hook(command, *args))
        return await super()._call_handler_hook(command, *args)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's parse of a MAIL/RCPT path (the email package's parser), without
        the class it defines on every call, and remembered per argument string."""
        address, rest = _parse_path(arg)
        limit = self.local_part_limit
        if address and limit and len(address.rpartition("@")[0]) > limit:
            return None, None
        return address, rest

    # -- EHLO and DATA ---------------------------------------------------------------------

    def ehlo_lines(self) -> list[str]:
        keywords = [f"SIZE {self.data_size_limit}", "8BITMIME", "SMTPUTF8", "PIPELINING"]
        keywords.append("ENHANCEDSTATUSCODES")
        if self.starttls_offered:
            keywords.append("STARTTLS")
        if self.tls_active:
            keywords.append("AUTH PLAIN LOGIN")
        lines = [self.hostname, *keywords]
        return [f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)]

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.data_size_limit or 0
        self._in_data = True
        try:
            content = await read_message(self._reader, limit)
        except asyncio.IncompleteReadError:
            return  # the client went away mid-message
        finally:
            self._in_data = False
        if content is None:
            self.envelope = self._create_envelope()
            await self.push(str(replies.S552_TOO_BIG(max=limit)))
            return
        self.envelope.content = self.envelope.original_content = content
        self.idle.clear()
        try:
            status = await self._call_handler_hook("DATA")
            self.envelope = self._create_envelope()
            await self.push("250 OK" if status is MISSING else status)
        finally:
            self.idle.set()


class _QuietSession(Session):
    """aiosmtpd logs a deprecation warning each time it sets ``login_data`` (every AUTH)."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


@functools.lru_cache(maxsize=4096)
def _parse_path(arg: str) -> tuple[str | None, str | None]:
    """(address, parameters) of a MAIL/RCPT argument, as ``SMTP._getaddr`` reads it;
    (None, None) when it does not parse."""
    if not arg:
        return "", ""
    try:
        if arg.lstrip().startswith("<"):
            angle, rest = get_angle_addr(arg)
            return angle.addr_spec, rest
        spec, rest = get_addr_spec(arg)
        return spec.addr_spec, rest
    except HeaderParseError:
        return None, None
