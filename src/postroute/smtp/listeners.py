"""The two submission listeners of one process, in its event loop: STARTTLS on
``POSTROUTE_SMTP_BIND`` and implicit TLS on ``POSTROUTE_SMTPS_BIND``.

    server = SmtpServer(runtime)
    await server.start()          # binds both (port 0: an ephemeral port, see .ports)
    ...
    await server.stop()           # 421 to open sessions, after any message being stored
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time

from postroute.config import parse_bind
from postroute.runtime import Runtime
from postroute.smtp import logsafe, replies
from postroute.smtp.authenticator import Authenticator
from postroute.smtp.handler import Handler
from postroute.smtp.limits import Limits
from postroute.smtp.protocol import SubmissionSMTP
from postroute.smtp.tls import server_context

log = logging.getLogger("postroute.smtp")

STARTTLS = "starttls"
IMPLICIT = "implicit"
TLS_HANDSHAKE_TIMEOUT = 60.0  # seconds at most (asyncio's default), else the idle timeout


class SmtpServer:
    def __init__(self, runtime: Runtime, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.rt = runtime
        self.settings = runtime.settings
        self.hostname = self.settings.smtp_hostname or socket.getfqdn()
        self.limits = Limits.from_settings(self.settings, runtime.clock)
        self.authenticator = Authenticator(runtime)
        self.handler = Handler(runtime, self.authenticator)
        self._tls = tls_context
        self._servers: dict[str, asyncio.Server] = {}
        self.sessions: set[SubmissionSMTP] = set()
        self._all_closed: asyncio.Event | None = None  # set by stop()

    @property
    def tls_context(self) -> ssl.SSLContext:
        assert self._tls is not None, "start() first"
        return self._tls

    @property
    def ports(self) -> dict[str, int]:
        """``{"starttls": port, "implicit": port}`` as bound."""
        return {kind: s.sockets[0].getsockname()[1] for kind, s in self._servers.items()}

    async def start(self) -> None:
        if self._tls is None:  # may create a key pair: not on the event loop
            self._tls = await asyncio.to_thread(server_context, self.settings, self.hostname)
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            # aiosmtpd logs every command line at INFO: too much, and on the hot path.
            logging.getLogger("mail.log").setLevel(logging.WARNING)
        logsafe.install()  # clients' control characters escaped in log lines
        loop = asyncio.get_running_loop()
        handshake_timeout = min(self.settings.smtp_idle_timeout_seconds, TLS_HANDSHAKE_TIMEOUT)
        for kind, bind, default_port in (
            (STARTTLS, self.settings.smtp_bind, 587),
            (IMPLICIT, self.settings.smtps_bind, 465),
        ):
            host, port = parse_bind(bind, default_port)
            implicit = kind == IMPLICIT
            self._servers[kind] = await loop.create_server(
                lambda implicit=implicit: SubmissionSMTP(self, implicit_tls=implicit),
                host,
                port,
                ssl=self._tls if implicit else None,
                # the session (and its idle timer) starts after the handshake
                ssl_handshake_timeout=handshake_timeout if implicit else None,
                reuse_address=True,
            )
            log.info("SMTP %s listener on %s:%s", kind, host, self.ports[kind])

    async def stop(self, grace: float = 10.0) -> None:
        """Stop listening; let a message being stored get its reply, then say 421 to
        every session and close it."""
        for server in self._servers.values():
            server.close()
        deadline = time.monotonic() + grace
        storing = [s.idle.wait() for s in self.sessions if not s.idle.is_set()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*storing), grace)
        sessions = list(self.sessions)
        goodbye = str(replies.S421_SHUTDOWN(host=self.hostname))
        for session in sessions:
            session.say_goodbye(goodbye)
        tasks = [s.handler_task for s in sessions if s.handler_task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(deadline - time.monotonic(), 1.0))
        self._all_closed = asyncio.Event()
        for session in list(self.sessions):
            session.abort()  # a peer that never took its 421, or never finished the TLS close
        if self.sessions:  # their connection_lost comes in the loop's next iterations
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), 1.0)
        await self.handler.committer.close()
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    def opened(self, session: SubmissionSMTP) -> None:
        self.sessions.add(session)

    def closed(self, session: SubmissionSMTP) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._all_closed is not None:
            self._all_closed.set()
