"""The submit path's checks and rows, shared by HTTP and SMTP: pure, no I/O.

An ingress turns what it received into :class:`Draft` values (fields checked one by
one, problems found so far); :func:`plan` runs the checks of the submit path against
the account's pools as last read (:class:`AccountPools`), composes or completes the
content, and describes the rows to store (content once, then per recipient a message
row, its tags, a queue row and a ``queued`` event), guarded by the stamps of the pools
and domains it was planned against. Every
problem of every draft is reported at once, in one ``DomainError``.

Each check of the path is one function here, in order: :func:`resolve_pool`,
:func:`sender_of`, :func:`check_sender_domain`. Later rules (suppressed recipients, a
template to render, ``send_at``) are one more function each, called from :func:`plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from postroute import errors, events
from postroute.db.changes import Changes
from postroute.domains import repository as domains_repo
from postroute.domains.names import from_domain
from postroute.events.record import Event, record
from postroute.kit import ids
from postroute.messages import repository as repo
from postroute.messages.compose import new_message_id
from postroute.messages.schemas import SendResponse, SentMessage
from postroute.models import SmtpPool
from postroute.models.queue import QUEUED
from postroute.pools import repository as pools_repo
from postroute.pools.routing import choose


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    code: str = errors.VALIDATION_FAILED


@dataclass(frozen=True)
class Recipient:
    kind: str  # to | cc | bcc
    email: str


@dataclass(frozen=True)
class Fields:
    """How an ingress names the fields the submit path checks, and orders problems."""

    pool: str = "pool"
    pool_named: bool = False  # a problem of a named pool starts with the field's name
    sender: str = "from"
    no_sender: str = "required: the pool has no from_email"
    # whether a missing From is reported when no pool could be resolved (SMTP says it
    # with the rest; HTTP waits: the default From depends on the pool)
    sender_without_pool: bool = False
    order: tuple[str, ...] = ()  # problems of these fields first, in this order


@dataclass
class Draft:
    """One message as an ingress hands it in: its fields checked one by one."""

    source: str  # "api" | "smtp"
    sender: str | None  # the From address, when the message has one
    recipients: list[Recipient]
    subject: str
    tags: Sequence[str]
    metadata: dict[str, str]
    pool_ref: str | None
    track_opens: bool
    track_clicks: bool
    # the content, given the From address to use when the message has none, and the time
    content: Callable[[str | None, datetime], bytes]
    problems: list[Problem] = field(default_factory=list)
    fields: Fields = Fields()
    mail_from: str | None = None  # the envelope sender an SMTP client gave


@dataclass(frozen=True)
class AccountState:
    """What the checks read of one account, as read at one time: its pools, whether it
    requires a verified From domain and which of its domains are, with their stamps
    (:func:`~postroute.pools.repository.pools_stamp`,
    :func:`~postroute.domains.repository.sending_stamp`): drafts are planned against them
    outside any write transaction, and the stamps tell at write time whether they hold."""

    account_id: str
    pools: list[SmtpPool]
    stamp: tuple[Any, ...]
    require_verified_domain: bool = False
    verified_domains: frozenset[str] = frozenset()
    domains_stamp: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Planned:
    """Drafts of one account made into rows (:attr:`changes`) and replies."""

    account_id: str
    drafts: Sequence[Draft]
    batch: bool
    now: datetime
    stamps: tuple[Any, ...]  # of the pools and domains it was planned against
    changes: Changes
    replies: list[SendResponse]


def plan(
    account_id: str, drafts: Sequence[Draft], pools: AccountState, now: datetime, *, batch: bool
) -> Planned:
    """Check ``drafts`` (all or none: a batch) and describe their rows. A refused draft
    raises one DomainError with every problem of every draft in ``details``."""
    problems: list[Problem] = []
    ready: list[tuple[Draft, SmtpPool, str]] = []
    for i, draft in enumerate(drafts):
        found = list(draft.problems)
        pool = resolve_pool(draft, pools.pools, found)
        sender = sender_of(draft, pool, found)
        check_sender_domain(draft, sender, pools, found)
        if found or pool is None or sender is None:
            prefix = f"messages[{i}]." if batch else ""
            order = draft.fields.order
            found.sort(key=lambda p: order.index(p.field) if p.field in order else len(order))
            problems.extend(Problem(prefix + p.field, p.message, p.code) for p in found)
            continue
        ready.append((draft, pool, sender))
    if problems:
        codes = {p.code for p in problems}
        raise errors.DomainError(
            "; ".join(p.message for p in problems),
            code=codes.pop() if len(codes) == 1 else errors.VALIDATION_FAILED,
            details=[{"field": p.field, "message": p.message} for p in problems],
        )
    changes = Changes()
    pools_repo.guard_stamp(changes, account_id, pools.stamp)
    if pools.domains_stamp is not None:
        domains_repo.guard_sending(changes, account_id, pools.domains_stamp)
    replies = [_add_rows(changes, account_id, d, p, s, now) for d, p, s in ready]
    stamps = (pools.stamp, pools.domains_stamp)
    return Planned(account_id, drafts, batch, now, stamps, changes, replies)


def resolve_pool(
    draft: Draft, pools: Sequence[SmtpPool], problems: list[Problem]
) -> SmtpPool | None:
    """The pool the draft names (id or name), else the default, else the first active by
    priority; None (and a problem) when there is none."""
    name = draft.fields.pool
    if draft.pool_ref is not None:
        for pool in pools:
            if draft.pool_ref in (pool.id, pool.name):
                return pool
        message = f"no SMTP pool with id or name {draft.pool_ref!r}"
        if draft.fields.pool_named:
            message = f"{name}: {message}"
        problems.append(Problem(name, message, errors.POOL_NOT_FOUND))
        return None
    route = choose(pools, None)
    if route is None:
        message = "no active SMTP pool: create one (POST /v1/smtp-pools, or postroute pools add)"
        problems.append(Problem(name, message, errors.NO_POOL_CONFIGURED))
        return None
    return next(p for p in pools if p.id == route.pool_id)


def sender_of(draft: Draft, pool: SmtpPool | None, problems: list[Problem]) -> str | None:
    """The From address: the message's, else the pool's ``from_email``."""
    if draft.sender is not None:
        return draft.sender
    if any(p.field == draft.fields.sender for p in problems):
        return None  # a From that did not parse: that problem is reported already
    if pool is not None and pool.from_email:
        return pool.from_email
    if pool is not None or draft.fields.sender_without_pool:
        problems.append(Problem(draft.fields.sender, draft.fields.no_sender))
    return None


def check_sender_domain(
    draft: Draft, sender: str | None, state: AccountState, problems: list[Problem]
) -> None:
    """When the account requires it, the From domain must be one of its verified domains
    (another account's does not count)."""
    if sender is None or not state.require_verified_domain:
        return
    domain = from_domain(sender)
    if domain not in state.verified_domains:
        message = (
            f"the From domain {domain} is not verified: add it (POST /v1/domains), publish "
            "its DNS records and verify it, or turn require_verified_domain off (PATCH "
            "/v1/account)"
        )
        problems.append(Problem(draft.fields.sender, message, errors.DOMAIN_NOT_VERIFIED))


def route_note(pool: SmtpPool, ref: str | None) -> str | None:
    """Why a send without a pool went where it went, when that was not the default."""
    if ref is None and not pool.is_default:
        return f"no active default pool; used {pool.name}, the first active pool by priority"
    return None


def _add_rows(
    changes: Changes, account_id: str, draft: Draft, pool: SmtpPool, sender: str, now: datetime
) -> SendResponse:
    content = draft.content(None if draft.sender else sender, now)
    batch_id = ids.new_id(ids.BATCH)
    content_id = ids.new_id(ids.CONTENT)
    domain = sender.rpartition("@")[2].lower()
    note = route_note(pool, draft.pool_ref)
    contents = [
        {
            "id": content_id,
            "account_id": account_id,
            "mime": content,
            "size": len(content),
            "created_at": now,
        }
    ]
    messages: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    queue: list[dict[str, Any]] = []
    queued: list[Event] = []
    sent: list[SentMessage] = []
    for rcpt in draft.recipients:
        message_id = ids.new_id(ids.MESSAGE)
        header = new_message_id(message_id, domain)
        messages.append(
            {
                "id": message_id,
                "account_id": account_id,
                "batch_id": batch_id,
                "content_id": content_id,
                "source": draft.source,
                "from_email": sender,
                "mail_from": draft.mail_from,
                "to_email": rcpt.email,
                "recipient_type": rcpt.kind,
                "subject": draft.subject,
                "message_id_header": header,
                "metadata": draft.metadata,
                "requested_pool": draft.pool_ref,
                "pool_id": pool.id,
                "route_note": note,
                "track_opens": draft.track_opens,
                "track_clicks": draft.track_clicks,
                "status": events.QUEUED,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        tags.extend(
            {"message_id": message_id, "tag": t, "account_id": account_id}
            for t in dict.fromkeys(draft.tags)
        )
        queue.append(
            {
                "message_id": message_id,
                "account_id": account_id,
                # a named pool stays asked for; otherwise the default at delivery time
                "pool_id": pool.id if draft.pool_ref else None,
                "state": QUEUED,
                "next_attempt_at": now,
                "attempts": 0,
                "created_at": now,
            }
        )
        data = {"pool_id": pool.id, "source": draft.source}
        queued.append(Event(events.QUEUED, account_id, message_id, now, data))
        # Replies built from values made here: nothing to validate.
        sent.append(SentMessage.model_construct(id=message_id, to=rcpt.email, message_id=header))
    repo.add_submission(changes, contents, messages, tags, queue)
    record(changes, queued)
    return SendResponse.model_construct(id=batch_id, messages=sent)
