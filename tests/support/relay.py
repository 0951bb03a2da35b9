"""A recording upstream SMTP relay (aiosmtpd) and other network doubles for tests.

`RecordingRelay` listens on 127.0.0.1 (ephemeral port) in a background thread with its
own event loop, so async tests (aiosmtplib) and blocking ones (smtplib) can both use it.
Fixtures wrapping all of this live in `tests.support.fixtures`.

    with RecordingRelay(tls="starttls", ca=ca, auth={"user": "pw"}) as relay:
        ...  # connect to relay.host, relay.port
        [message] = relay.wait_for(1)  # or: await relay.wait_for_async(1)
        assert message.rcpt_tos == ("to@example.com",)

TLS: "none", "starttls" (`require_tls` refuses commands before it) or "implicit"; the
certificate (localhost, 127.0.0.1) comes from `ca`. Scripted replies: `mail_replies`,
`rcpt_replies`, `data_replies` (or `relay.script(...)` later) take either a list of
replies consumed in order (then the default reply again), or a callable receiving a
`Command` and returning a reply or None (default). A reply starting with `421` is sent
and the connection closed. `reject_connections=True` answers every new connection with
`421` and closes it. Recorded, thread-safe: `messages` (accepted), `rejected`,
`connections`, `current_sessions`, `peak_sessions`, `rset_count`, `pipelined_count`,
`auth_attempts`; PIPELINING is offered unless `pipelining=False`;
`wait_idle()` waits until every client has left (counts settle after a client's QUIT).

Also here: `SilentServer` (accepts TCP, never answers), `closed_port()` and
`reserved_closed_port()` (a port that refuses connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import email.policy
import re
import secrets
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.parser import BytesParser
from typing import Any, Literal, TypeVar

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"
TlsMode = Literal["none", "starttls", "implicit"]
Reply = str
ReplyScript = Sequence[Reply] | Callable[["Command"], Reply | None]

_REPLY = re.compile(r"^[2-5]\d\d[ -]")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Command:
    """What a reply callable sees: one MAIL, RCPT or DATA command."""

    verb: Literal["MAIL", "RCPT", "DATA"]
    session_id: int
    address: str | None  # MAIL FROM / RCPT TO argument; None for DATA
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    data: bytes | None  # message bytes for DATA


@dataclass(frozen=True)
class ReceivedMessage:
    """One DATA transaction as the relay saw it."""

    session_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # raw bytes as received (dot-unstuffed, CRLF line ends)
    reply: str
    received_monotonic: float  # time.monotonic() at end of DATA
    received_at: float  # time.time() at end of DATA
    tls: bool
    auth_user: str | None

    @property
    def queue_id(self) -> str | None:
        match = re.search(r"queued as (\S+)", self.reply)
        return match.group(1) if match else None

    def parsed(self) -> email.message.EmailMessage:
        message = BytesParser(policy=email.policy.default).parsebytes(self.data)
        assert isinstance(message, email.message.EmailMessage)
        return message


def server_tls_context(
    ca: trustme.CA, names: Sequence[str] = ("localhost", "127.0.0.1")
) -> ssl.SSLContext:
    """Server context with a certificate for `names` issued by `ca`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def closed_port() -> int:
    """A port on 127.0.0.1 with no listener (prefer `reserved_closed_port` to hold it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def reserved_closed_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening, held until exit."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


class _Script:
    def __init__(self, script: ReplyScript | None) -> None:
        self._callable: Callable[[Command], Reply | None] | None = None
        self._queue: deque[Reply] = deque()
        if callable(script):
            self._callable = script
        elif script is not None:
            for reply in script:
                _check_reply(reply)
            self._queue.extend(script)

    def next(self, command: Command) -> Reply | None:
        if self._callable is not None:
            reply = self._callable(command)
            if reply is not None:
                _check_reply(reply)
            return reply
        return self._queue.popleft() if self._queue else None


def _check_reply(reply: str) -> None:
    if not _REPLY.match(reply):
        raise ValueError(f"not an SMTP reply: {reply!r}")


class _LoopThread:
    """An event loop running in a daemon thread; `call` runs a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        assert not self._thread.is_alive(), "relay thread did not stop"


class _ThreadedServer:
    """Base: listen on 127.0.0.1:0 in a loop thread; abort every connection on stop."""

    _name = "test-server"

    def __init__(self) -> None:
        self.host = HOST
        self.port = 0
        self._lock = threading.Condition()
        self._transports: set[asyncio.BaseTransport] = set()
        self._thread: _LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._connections = 0

    def _protocol(self) -> asyncio.BaseProtocol:
        raise NotImplementedError

    def _listen_ssl(self) -> ssl.SSLContext | None:
        return None

    def start(self) -> None:
        assert self._thread is None, "already started"
        self._thread = _LoopThread(self._name)
        self._server = self._thread.call(self._listen())
        self.port = self._server.sockets[0].getsockname()[1]

    async def _listen(self) -> asyncio.Server:
        return await asyncio.get_running_loop().create_server(
            self._protocol, HOST, 0, ssl=self._listen_ssl()
        )

    def stop(self) -> None:
        if self._thread is None:
            return
        try:
            self._thread.call(self._shutdown())
        finally:
            self._thread.stop()
            self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.abort()
        await self._server.wait_closed()
        await asyncio.sleep(0)
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def drop_sessions(self) -> None:
        """Close every open connection (as a relay's idle timeout does) and wait until
        they are gone; the listener keeps accepting new ones."""
        assert self._thread is not None, "not started"
        self._thread.call(self._drop())
        self.wait_until(lambda: not self._transports, 5.0, "the sessions to close")

    async def _drop(self) -> None:
        with self._lock:
            transports = list(self._transports)
        for transport in transports:
            transport.close()

    def _opened(self, transport: asyncio.BaseTransport) -> None:
        with self._lock:
            self._transports.add(transport)
            self._connections += 1
            self._lock.notify_all()

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        with self._lock:
            self._transports.discard(transport)
            self._lock.notify_all()

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        with self._lock:
            return self._connections

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Block until `predicate()` (called under the lock) is true."""
        with self._lock:
            if not self._lock.wait_for(predicate, timeout):
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    async def wait_until_async(
        self, predicate: Callable[[], bool], timeout: float, what: str
    ) -> None:
        """Like `wait_until`, without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if predicate():
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.005)

    def __enter__(self) -> _ThreadedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentServer(_ThreadedServer):
    """Accepts TCP connections and never sends a byte (for timeout tests)."""

    _name = "silent-server"

    def _protocol(self) -> asyncio.BaseProtocol:
        return _SilentProtocol(self)

    def __enter__(self) -> SilentServer:
        self.start()
        return self


class _SilentProtocol(asyncio.Protocol):
    def __init__(self, owner: _ThreadedServer) -> None:
        self._owner = owner
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._owner._opened(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._owner._closed(self._transport)


class _RejectProtocol(_SilentProtocol):
    """Greets with 421 and closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"421 4.3.2 Service not available, closing transmission channel\r\n")
        transport.close()


class RecordingRelay(_ThreadedServer):
    """aiosmtpd relay that records messages, connections, sessions and RSETs."""

    _name = "recording-relay"

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        ca: trustme.CA | None = None,
        cert_names: Sequence[str] = ("localhost", "127.0.0.1"),
        require_tls: bool = False,
        auth: Mapping[str, str] | None = None,
        auth_require_tls: bool | None = None,
        mail_replies: ReplyScript | None = None,
        rcpt_replies: ReplyScript | None = None,
        data_replies: ReplyScript | None = None,
        data_delay: float = 0.0,
        reject_connections: bool = False,
        data_size_limit: int = 10 * 1024 * 1024,
        hostname: str = "relay.test",
        smtputf8: bool = True,
        pipelining: bool = True,
    ) -> None:
        """`ca` issues the certificate for `cert_names` (a fresh CA if None). `auth` maps
        user -> password; when set, MAIL needs AUTH first. `auth_require_tls` defaults to
        True only for STARTTLS. `data_delay` seconds pass before each DATA reply."""
        super().__init__()
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"unknown tls mode {tls!r}")
        if require_tls and tls == "none":
            raise ValueError("require_tls needs tls='starttls' or 'implicit'")
        self.tls: TlsMode = tls
        self.ca = ca if ca is not None or tls == "none" else trustme.CA()
        self._tls_context = None
        if self.ca is not None and tls != "none":
            self._tls_context = server_tls_context(self.ca, cert_names)
        self.require_tls = require_tls
        self.auth = dict(auth) if auth is not None else None
        self.auth_require_tls = tls == "starttls" if auth_require_tls is None else auth_require_tls
        self.data_delay = data_delay
        self.data_size_limit = data_size_limit
        self.hostname = hostname
        self.smtputf8 = smtputf8
        self.pipelining = pipelining
        self._scripts = {
            "MAIL": _Script(mail_replies),
            "RCPT": _Script(rcpt_replies),
            "DATA": _Script(data_replies),
        }
        self._reject = reject_connections
        self._sessions = 0
        self._current = 0
        self._peak = 0
        self._rsets = 0
        self._pipelined = 0
        self._messages: list[ReceivedMessage] = []
        self._rejected: list[ReceivedMessage] = []
        self._auth_attempts: list[tuple[str, bool]] = []

    def __enter__(self) -> RecordingRelay:
        self.start()
        return self

    # -- configuration at run time -------------------------------------------------------

    def script(
        self,
        *,
        mail: ReplyScript | None = None,
        rcpt: ReplyScript | None = None,
        data: ReplyScript | None = None,
    ) -> None:
        """Replace the reply scripts of the given commands (None leaves one unchanged)."""
        with self._lock:
            for verb, script in (("MAIL", mail), ("RCPT", rcpt), ("DATA", data)):
                if script is not None:
                    self._scripts[verb] = _Script(script)

    @property
    def reject_connections(self) -> bool:
        with self._lock:
            return self._reject

    @reject_connections.setter
    def reject_connections(self, value: bool) -> None:
        with self._lock:
            self._reject = value

    def clear(self) -> None:
        """Forget recorded messages, counts and auth attempts (not open sessions)."""
        with self._lock:
            self._messages.clear()
            self._rejected.clear()
            self._auth_attempts.clear()
            self._connections = self._rsets = self._pipelined = 0
            self._peak = self._current

    # -- recordings --------------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages accepted (2xx reply to DATA), in order."""
        with self._lock:
            return list(self._messages)

    @property
    def rejected(self) -> list[ReceivedMessage]:
        """Messages whose DATA got a non-2xx reply."""
        with self._lock:
            return list(self._rejected)

    @property
    def current_sessions(self) -> int:
        with self._lock:
            return self._current

    @property
    def peak_sessions(self) -> int:
        with self._lock:
            return self._peak

    @property
    def rset_count(self) -> int:
        with self._lock:
            return self._rsets

    @property
    def pipelined_count(self) -> int:
        """MAIL commands that arrived with their RCPT already behind them (RFC 2920)."""
        with self._lock:
            return self._pipelined

    @property
    def auth_attempts(self) -> list[tuple[str, bool]]:
        """(username, success) per AUTH attempt."""
        with self._lock:
            return list(self._auth_attempts)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least `count` messages were accepted; return them all."""
        self.wait_until(lambda: len(self._messages) >= count, timeout, f"{count} message(s)")
        return self.messages

    async def wait_for_async(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        await self.wait_until_async(
            lambda: len(self._messages) >= count, timeout, f"{count} message(s)"
        )
        return self.messages

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Block until no session is open (the relay saw every client leave)."""
        self.wait_until(lambda: self._current == 0, timeout, "all sessions to end")

    async def wait_idle_async(self, timeout: float = 5.0) -> None:
        await self.wait_until_async(lambda: self._current == 0, timeout, "all sessions to end")

    # -- server side (relay thread) ----------------------------------------------------

    def _listen_ssl(self) -> ssl.SSLContext | None:
        return self._tls_context if self.tls == "implicit" else None

    def _protocol(self) -> asyncio.BaseProtocol:
        if self.reject_connections:
            return _RejectProtocol(self)
        return _RelaySMTP(
            self,
            _Handler(self),
            hostname=self.hostname,
            data_size_limit=self.data_size_limit,
            tls_context=self._tls_context if self.tls == "starttls" else None,
            require_starttls=self.require_tls and self.tls == "starttls",
            auth_require_tls=self.auth_require_tls,
            authenticator=self._authenticate if self.auth is not None else None,
            enable_SMTPUTF8=self.smtputf8,
            loop=asyncio.get_running_loop(),
        )

    def _opened(self, transport: asyncio.BaseTransport) -> None:
        with self._lock:
            self._current += 1
            self._peak = max(self._peak, self._current)
        super()._opened(transport)

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        with self._lock:
            self._current -= 1
        super()._closed(transport)

    def _new_session_id(self) -> int:
        with self._lock:
            self._sessions += 1
            return self._sessions

    def _reply(self, command: Command) -> Reply | None:
        with self._lock:
            script = self._scripts[command.verb]
        return script.next(command)

    def _count_pipelined(self) -> None:
        with self._lock:
            self._pipelined += 1

    def _count_rset(self) -> None:
        with self._lock:
            self._rsets += 1

    def _record(self, message: ReceivedMessage, accepted: bool) -> None:
        with self._lock:
            (self._messages if accepted else self._rejected).append(message)
            self._lock.notify_all()

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        assert self.auth is not None and isinstance(auth_data, LoginPassword)
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = user in self.auth and secrets.compare_digest(
            self.auth[user].encode(), password.encode()
        )
        with self._lock:
            self._auth_attempts.append((user, ok))
        if ok:
            return AuthResult(success=True, auth_data=user)
        # handled=False makes aiosmtpd send the 535 (handled=True would hang the client).
        return AuthResult(success=False, handled=False)


class _RelaySMTP(SMTP):  # type: ignore[misc]
    """aiosmtpd session that reports connect/disconnect and closes after a 421."""

    def __init__(self, relay: RecordingRelay, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.relay = relay
        self.session_id = 0
        self._raw_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw_transport is None:  # not the second call after STARTTLS
            self._raw_transport = transport
            self.session_id = self.relay._new_session_id()
            self.relay._opened(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._raw_transport is not None:
            self.relay._closed(self._raw_transport)
            self._raw_transport = None
        super().connection_lost(error)

    async def push(self, status: str | bytes) -> None:
        await super().push(status)
        text = status.decode() if isinstance(status, bytes) else status
        if text.startswith("421") and self.transport is not None:
            self.transport.close()


class _Handler:
    """aiosmtpd hooks: scripted replies, AUTH enforcement, recording."""

    def __init__(self, relay: RecordingRelay) -> None:
        self.relay = relay

    def _command(
        self, server: _RelaySMTP, envelope: Envelope, verb: Any, address: str | None
    ) -> Command:
        return Command(
            verb=verb,
            session_id=server.session_id,
            address=address,
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content if verb == "DATA" else None,
        )

    async def handle_MAIL(
        self,
        server: _RelaySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.relay.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if b"RCPT TO:" in bytes(server._reader._buffer).upper():  # read with this MAIL
            self.relay._count_pipelined()
        reply = self.relay._reply(self._command(server, envelope, "MAIL", address))
        if reply is None or reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply or "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: _RelaySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.relay._reply(self._command(server, envelope, "RCPT", address))
        if reply is None or reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 2.1.5 Ok"

    async def handle_DATA(self, server: _RelaySMTP, session: Session, envelope: Envelope) -> str:
        received_monotonic, received_at = time.monotonic(), time.time()
        reply = self.relay._reply(self._command(server, envelope, "DATA", None))
        reply = reply or f"250 2.0.0 Ok: queued as {secrets.token_hex(5).upper()}"
        if self.relay.data_delay:
            await asyncio.sleep(self.relay.data_delay)
        message = ReceivedMessage(
            session_id=server.session_id,
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            reply=reply,
            received_monotonic=received_monotonic,
            received_at=received_at,
            tls=self.relay.tls == "implicit" or session.ssl is not None,
            auth_user=session.auth_data if session.authenticated else None,
        )
        self.relay._record(message, accepted=reply.startswith("2"))
        return reply

    async def handle_EHLO(
        self,
        server: _RelaySMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.relay.pipelining:  # aiosmtpd reads commands in order: pipelining works
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RSET(self, server: _RelaySMTP, session: Session, envelope: Envelope) -> str:
        self.relay._count_rset()
        return "250 2.0.0 Ok"


__all__ = [
    "Command",
    "ReceivedMessage",
    "RecordingRelay",
    "Reply",
    "ReplyScript",
    "SilentServer",
    "TlsMode",
    "closed_port",
    "reserved_closed_port",
    "server_tls_context",
]
