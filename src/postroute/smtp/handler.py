"""The aiosmtpd handler: SMTP commands in, the submit path out (the same as HTTP's:
``messages.ingest`` makes a draft, :class:`~postroute.messages.submit.Submitter` plans
it), replies from the table in :mod:`postroute.smtp.replies`. No SQL here. The DATA
hook plans the message outside any transaction and hands it to the group
:class:`Committer`; the 250 is sent only after the write holding it is on disk."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiosmtpd.smtp import Envelope, Session, TLSSetupException
from sqlalchemy.exc import DBAPIError, StatementError

from postroute import errors
from postroute.db.store import Prepared
from postroute.messages import ingest
from postroute.messages.planning import Planned
from postroute.messages.schemas import SendResponse
from postroute.messages.submit import Submitter
from postroute.runtime import Runtime
from postroute.smtp import replies
from postroute.smtp.authenticator import Authenticator
from postroute.smtp.committer import Committer
from postroute.smtp.protocol import SubmissionSMTP
from postroute.smtp.transports import finish

log = logging.getLogger("postroute.smtp")

# Messages at least this large are parsed in a worker thread, off the event loop.
THREAD_AT = 256 * 1024
# The replies of every MAIL and RCPT, formatted once.
SENDER_OK = str(replies.S250_SENDER_OK)
RECIPIENT_OK = str(replies.S250_RECIPIENT_OK)
NULL_SENDER = "<>"  # MAIL FROM:<> as aiosmtpd gives it (it must stay truthy for RCPT)


@dataclass(frozen=True)
class Ready:
    """A planned message and its rows as the store writes them."""

    planned: Planned
    prepared: Prepared


class Handler:
    def __init__(self, runtime: Runtime, authenticator: Authenticator) -> None:
        self.rt = runtime
        self.authenticator = authenticator
        # The submit path, shared with HTTP: drafts are planned against the account's
        # pools as last read, outside any transaction; the group commit stores them.
        self.submitter = Submitter(runtime)
        self.committer: Committer[Ready, SendResponse] = Committer(
            lambda: runtime.store,
            lambda ready: ready.prepared,
            lambda ready: ready.planned.replies[0],
            self._replan,
        )
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
        if address != NULL_SENDER:  # the client's bounce address (or <>): kept for relaying
            try:
                address = ingest.recipient(address)
            except errors.DomainError as exc:
                return str(replies.S553_BAD_SENDER(reason=replies.clean(exc.message)))
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
            draft = ingest.draft(
                parsed,
                envelope.rcpt_tos,
                max_recipients=self.max_recipients,
                mail_from="" if envelope.mail_from == NULL_SENDER else envelope.mail_from,
            )
            # (may read the pools: run to its end even if the client leaves meanwhile)
            planned = await finish(self.submitter.plan(account, [draft], batch=False))
            # rows compiled for the store now, not in its writer's thread under the lock
            ready = Ready(planned, self.submitter.prepare(planned))
            accepted = await self.committer.run(ready, len(raw))
        except errors.DomainError as exc:
            reasons = [str(d.get("message", "")) for d in exc.details]
            log.info("SMTP message from %s refused: %s", server.peer_ip, exc.message)
            return replies.for_error(exc, reasons)
        except Exception as exc:
            log.error("SMTP message from %s not stored: %s", server.peer_ip, _cause(exc))
            return str(replies.S451_TRANSIENT)
        self.rt.wake_worker()
        sent = [(m.id, m.to, m.suppression_reason) for m in accepted.messages]
        return replies.queued(sent, accepted.id)

    async def _replan(self, items: Sequence[Ready]) -> list[Ready | errors.DomainError]:
        """A group commit's items whose write was stale, planned against pools read now."""
        fresh = await self.submitter.refresh([r.planned for r in items])
        return [
            p if isinstance(p, errors.DomainError) else Ready(p, self.submitter.prepare(p))
            for p in fresh
        ]

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
