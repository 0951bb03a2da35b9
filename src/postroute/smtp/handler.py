"""The aiosmtpd handler: SMTP commands in, ``messages.ingest`` calls out, replies from
the table in :mod:`postroute.smtp.replies`. No SQL here. The DATA hook validates the
message and builds its rows against the account's pools as last read (outside any
transaction), and owns the transaction it is stored in (shared with other sessions'
messages by the :class:`Committer`); the 250 is sent only after that transaction is
committed and on disk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

from aiosmtpd.smtp import Envelope, Session, TLSSetupException
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.api.runtime import Runtime
from postroute.db import begin_read, transaction
from postroute.messages import ingest
from postroute.messages.schemas import SendResponse
from postroute.smtp import replies
from postroute.smtp.authenticator import Authenticator
from postroute.smtp.committer import Committer
from postroute.smtp.protocol import SubmissionSMTP

log = logging.getLogger("postroute.smtp")

# Messages at least this large are parsed in a worker thread, off the event loop.
THREAD_AT = 256 * 1024
# The replies of every MAIL and RCPT, formatted once.
SENDER_OK = str(replies.S250_SENDER_OK)
RECIPIENT_OK = str(replies.S250_RECIPIENT_OK)


class Handler:
    def __init__(self, runtime: Runtime, authenticator: Authenticator) -> None:
        self.rt = runtime
        self.authenticator = authenticator
        dialect = runtime.engine.dialect
        # SQLite: each message's inserts converted for the writer at DATA time, not in the
        # writer's thread under the lock.
        self._dialect = dialect if runtime.writer is not None else None
        self.committer: Committer[ingest.Planned, SendResponse] = Committer(
            lambda: runtime.sessions,
            self._store,
            writer=lambda: runtime.writer,
            build=lambda planned: ingest.unit_of(planned, dialect),
        )
        # Per account, its pools as last read: requests are planned against them outside
        # the write transaction, which checks that they still hold (ingest.store).
        self._pools: dict[str, ingest.Pools] = {}
        settings = runtime.settings
        self.max_recipients = settings.smtp_max_recipients
        self.max_messages = settings.smtp_max_messages_per_connection

    async def handle_EHLO(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        server.command_size_limits.clear()  # aiosmtpd raises the MAIL limit on every EHLO
        return server.ehlo_lines()

    async def handle_MAIL(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if server.transactions >= self.max_messages:
            return str(replies.S421_TOO_MANY_MESSAGES(host=server.hostname))
        try:
            account = await self._account(server)
        except Exception as exc:
            log.error("SMTP MAIL from %s: account lookup failed: %s", server.peer_ip, _cause(exc))
            return str(replies.S451_TRANSIENT)
        if account is None:
            return str(replies.S530_AUTH_REQUIRED)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return SENDER_OK

    async def handle_RCPT(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return str(replies.S452_TOO_MANY_RECIPIENTS(max=self.max_recipients))
        try:
            normalised = ingest.recipient(address)
        except errors.DomainError as exc:
            return str(replies.S553_BAD_RECIPIENT(reason=replies.clean(exc.message)))
        envelope.rcpt_tos.append(normalised)
        envelope.rcpt_options.extend(rcpt_options)
        return RECIPIENT_OK

    async def handle_DATA(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope
    ) -> str:
        server.transactions += 1
        account = await self._account(server)  # known since MAIL: no query here
        raw = envelope.original_content or b""
        if account is None:  # pragma: no cover - MAIL refused it already
            return str(replies.S530_AUTH_REQUIRED)
        now = self.rt.clock.now()
        try:
            if len(raw) >= THREAD_AT:
                parsed = await asyncio.to_thread(ingest.parse, raw, now)
            else:
                parsed = ingest.parse(raw, now)
            request = ingest.Request(account, parsed, list(envelope.rcpt_tos))
            planned = await self._plan(request, now)
            accepted = await self.committer.run(planned, len(raw))
        except errors.DomainError as exc:
            reasons = [str(d.get("message", "")) for d in exc.details]
            log.info("SMTP message from %s refused: %s", server.peer_ip, exc.message)
            return replies.for_error(exc, reasons)
        except Exception as exc:
            log.error("SMTP message from %s not stored: %s", server.peer_ip, _cause(exc))
            return str(replies.S451_TRANSIENT)
        self.rt.wake_worker()
        return replies.queued([(m.id, m.to) for m in accepted.messages], accepted.id)

    async def _plan(self, request: ingest.Request, now: datetime) -> ingest.Planned:
        """Validate and build rows against the account's pools as last read; a request
        they refuse is checked again against the pools read now (one created a moment
        ago must not be refused)."""
        known = self._pools.get(request.account_id)
        pools = known or await self._read_pools(request.account_id)
        try:
            return self._plan_with(request, pools, now)
        except errors.DomainError:
            if known is None:
                raise
        return self._plan_with(request, await self._read_pools(request.account_id), now)

    def _plan_with(
        self, request: ingest.Request, pools: ingest.Pools, now: datetime
    ) -> ingest.Planned:
        limit = self.max_recipients
        return ingest.plan(request, pools, now, max_recipients=limit, dialect=self._dialect)

    async def _read_pools(self, account_id: str) -> ingest.Pools:
        async with transaction(self.rt.sessions) as session:
            await begin_read(session)
            pools = await ingest.read_pools(session, account_id)
        self._pools[account_id] = pools
        return pools

    async def _store(
        self, db: AsyncSession, planned: Sequence[ingest.Planned]
    ) -> Sequence[SendResponse | errors.DomainError]:
        """One group commit's messages (see :class:`Committer`)."""
        results, fresh = await ingest.store(db, planned, max_recipients=self.max_recipients)
        self._pools.update(fresh)
        return results

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            log.info("SMTP STARTTLS handshake failed: %r", error.__cause__)
        else:
            log.error("SMTP session error: %s", _cause(error))
        return str(replies.S451_TRANSIENT)

    async def _account(self, server: SubmissionSMTP) -> str | None:
        """The sending account: from AUTH, else from an IP credential (looked up once)."""
        if server.account is not None:
            return server.account.account_id
        if not server.ip_checked:
            server.ip_account = await self.authenticator.account_for_ip(server.peer_ip)
            server.ip_checked = True
        return server.ip_account


def _cause(exc: BaseException) -> str:
    """What went wrong, without SQL parameters (they would hold the message itself)."""
    if isinstance(exc, DBAPIError):
        return f"{type(exc).__name__}: {type(exc.orig).__name__}: {exc.orig}"
    if isinstance(exc, StatementError):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"
