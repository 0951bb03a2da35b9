"""Submission of messages (HTTP API; SMTP ingress later) and reading them back.

One submission → one shared content row, then per recipient a message row, its tags,
a queue row and a ``queued`` event, all in the caller's transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors, events
from postroute.delivery.repository import QUEUED
from postroute.delivery.routing import choose
from postroute.kit import ids
from postroute.kit.clock import Clock
from postroute.messages import repository as repo
from postroute.messages.compose import compose, new_message_id
from postroute.messages.schemas import Address, SendRequest, SendResponse, SentMessage
from postroute.models import IdempotencyKey, SmtpPool
from postroute.pools import repository as pools_repo


@dataclass(frozen=True)
class Recipient:
    kind: str  # to | cc | bcc
    email: str


@dataclass(frozen=True)
class Submission:
    """A prepared message for one or more recipients, from either ingress."""

    content: bytes
    sender: str
    recipients: Sequence[Recipient]
    subject: str
    tags: Sequence[str]
    metadata: dict[str, str]
    pool: SmtpPool
    requested_pool: str | None
    track_opens: bool
    track_clicks: bool
    source: str
    route_note: str | None = None


def resolve_pool(pools: Sequence[SmtpPool], ref: str | None, field: str) -> SmtpPool:
    """The pool a send names (id or name), else the default / first active one."""
    if ref is not None:
        for pool in pools:
            if ref in (pool.id, pool.name):
                return pool
        raise errors.DomainError(
            f"no SMTP pool {ref!r}",
            code=errors.POOL_NOT_FOUND,
            details=[{"field": field, "message": f"no SMTP pool with id or name {ref!r}"}],
        )
    route = choose(pools, None)
    if route is None:
        raise errors.DomainError(
            "no active SMTP pool: create one with POST /v1/smtp-pools",
            code=errors.NO_POOL_CONFIGURED,
        )
    return next(p for p in pools if p.id == route.pool_id)


def route_note(pool: SmtpPool, ref: str | None) -> str | None:
    """Why a send without a pool went where it went, when that was not the default."""
    if ref is None and not pool.is_default:
        return f"no active default pool; used {pool.name}, the first active pool by priority"
    return None


async def account_pools(session: AsyncSession, account_id: str) -> list[SmtpPool]:
    return list(await pools_repo.list_pools(session, account_id))


def plan_requests(
    account_id: str,
    requests: Sequence[SendRequest],
    pools: Sequence[SmtpPool],
    now: datetime,
    *,
    batch: bool,
) -> list[tuple[str, Submission]]:
    """Resolve the pool of every request (all problems at once), then compose them all.

    No database work: the caller reads ``pools`` first and stores the result with
    :func:`store_many`, so that composing holds no lock (SQLite has one writer)."""
    problems: list[dict[str, Any]] = []
    codes: set[str] = set()
    plans: list[tuple[SendRequest, SmtpPool, Address]] = []
    for i, req in enumerate(requests):
        prefix = f"messages[{i}]." if batch else ""
        try:
            pool = resolve_pool(pools, req.pool_ref, prefix + "pool")
        except errors.DomainError as exc:
            codes.add(exc.code)
            problems.extend(exc.details or [{"field": prefix + "pool", "message": exc.message}])
            continue
        sender = req.sender or (Address(email=pool.from_email) if pool.from_email else None)
        if sender is None:
            problems.append(
                {"field": prefix + "from", "message": "required: the pool has no from_email"}
            )
            codes.add(errors.VALIDATION_FAILED)
            continue
        plans.append((req, pool, sender))
    if problems:
        code = next(iter(codes)) if len(codes) == 1 else errors.VALIDATION_FAILED
        raise errors.DomainError(problems[0]["message"], code=code, details=problems)
    return [(account_id, _submission(req, pool, sender, now)) for req, pool, sender in plans]


async def submit_requests(
    session: AsyncSession,
    account_id: str,
    requests: Sequence[SendRequest],
    clock: Clock,
    *,
    batch: bool,
) -> list[SendResponse]:
    """Read the pools, plan and store in the caller's transaction (one-off senders such as
    the CLI; the HTTP API plans outside its write transaction)."""
    pools = await account_pools(session, account_id)
    now = clock.now()
    return await store_many(
        session, plan_requests(account_id, requests, pools, now, batch=batch), now
    )


def _submission(req: SendRequest, pool: SmtpPool, sender: Address, now: datetime) -> Submission:
    return Submission(
        content=compose(req, date=now, default_from=sender),
        sender=sender.email,
        recipients=[Recipient(kind, a.email) for kind, a in req.recipients()],
        subject=req.subject,
        tags=req.tags,
        metadata=dict(req.metadata),
        pool=pool,
        requested_pool=req.pool_ref,
        track_opens=bool(req.track_opens),
        track_clicks=bool(req.track_clicks),
        source="api",
        route_note=route_note(pool, req.pool_ref),
    )


async def store(
    session: AsyncSession, account_id: str, sub: Submission, now: datetime
) -> SendResponse:
    """Write one submission: content once, then message, tags, queue row, event per recipient."""
    return (await store_many(session, [(account_id, sub)], now))[0]


async def store_many(
    session: AsyncSession, subs: Sequence[tuple[str, Submission]], now: datetime
) -> list[SendResponse]:
    """Several submissions (of any accounts) in one set of bulk statements."""
    return await store_prepared(session, prepare(subs, now))


@dataclass(frozen=True)
class Prepared:
    """The rows of some submissions and their replies, made before any transaction."""

    rows: repo.SubmissionRows
    replies: list[SendResponse]


def prepare(subs: Sequence[tuple[str, Submission]], now: datetime) -> Prepared:
    """Ids, rows and replies: no database work, so that a writer builds them before it
    takes SQLite's one write lock, which it then holds only for the inserts."""
    rows = repo.SubmissionRows(contents=[], messages=[], tags=[], deliveries=[], events=[])
    replies = [_add_rows(rows, account_id, sub, now) for account_id, sub in subs]
    return Prepared(rows, replies)


def combine(parts: Sequence[Prepared]) -> Prepared:
    """Several prepared submissions as one, to store in one set of bulk statements."""
    rows = repo.SubmissionRows(contents=[], messages=[], tags=[], deliveries=[], events=[])
    replies: list[SendResponse] = []
    for part in parts:
        rows.contents.extend(part.rows.contents)
        rows.messages.extend(part.rows.messages)
        rows.tags.extend(part.rows.tags)
        rows.deliveries.extend(part.rows.deliveries)
        rows.events.extend(part.rows.events)
        replies.extend(part.replies)
    return Prepared(rows, replies)


async def store_prepared(session: AsyncSession, prepared: Prepared) -> list[SendResponse]:
    await repo.insert_submission(session, prepared.rows)
    return prepared.replies


def _add_rows(
    rows: repo.SubmissionRows, account_id: str, sub: Submission, now: datetime
) -> SendResponse:
    batch_id = ids.new_id(ids.BATCH)
    content_id = ids.new_id(ids.CONTENT)
    domain = sub.sender.rpartition("@")[2].lower()
    rows.contents.append(
        {
            "id": content_id,
            "account_id": account_id,
            "mime": sub.content,
            "size": len(sub.content),
            "created_at": now,
        }
    )
    sent: list[SentMessage] = []
    for rcpt in sub.recipients:
        message_id = ids.new_id(ids.MESSAGE)
        header = new_message_id(message_id, domain)
        rows.messages.append(
            {
                "id": message_id,
                "account_id": account_id,
                "batch_id": batch_id,
                "content_id": content_id,
                "source": sub.source,
                "from_email": sub.sender,
                "to_email": rcpt.email,
                "recipient_type": rcpt.kind,
                "subject": sub.subject,
                "message_id_header": header,
                "metadata": sub.metadata,
                "requested_pool": sub.requested_pool,
                "pool_id": sub.pool.id,
                "route_note": sub.route_note,
                "track_opens": sub.track_opens,
                "track_clicks": sub.track_clicks,
                "status": events.QUEUED,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        rows.tags.extend(
            {"message_id": message_id, "tag": t, "account_id": account_id}
            for t in dict.fromkeys(sub.tags)
        )
        rows.deliveries.append(
            {
                "message_id": message_id,
                "account_id": account_id,
                # a named pool stays asked for; otherwise the default at delivery time
                "pool_id": sub.pool.id if sub.requested_pool else None,
                "state": QUEUED,
                "next_attempt_at": now,
                "attempts": 0,
                "created_at": now,
            }
        )
        rows.events.append(
            {
                "id": ids.new_id(ids.EVENT),
                "account_id": account_id,
                "message_id": message_id,
                "type": events.QUEUED,
                "created_at": now,
                "data": {"pool_id": sub.pool.id, "source": sub.source},
            }
        )
        # Replies built from values made here: nothing to validate.
        sent.append(SentMessage.model_construct(id=message_id, to=rcpt.email, message_id=header))
    return SendResponse.model_construct(id=batch_id, messages=sent)


# -- idempotency ---------------------------------------------------------------------------


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def idempotent_replay(
    session: AsyncSession,
    account_id: str,
    key: str,
    body_hash: str,
    clock: Clock,
    ttl: timedelta,
    *,
    forget: bool = True,
) -> IdempotencyKey | None:
    """The stored reply for a retried request, None for a new one; a reused key with
    another body is a conflict. Keys older than ``ttl`` are ignored, and deleted when
    ``forget`` (a caller that only reads leaves that to its write transaction)."""
    found = await repo.get_idempotency(session, account_id, key)
    if found is None:
        return None
    if clock.now() - found.created_at > ttl:
        if forget:
            await repo.delete_idempotency(session, account_id, key)
        return None
    if found.request_hash != body_hash:
        raise errors.DomainError(
            "this Idempotency-Key was used with a different request body",
            code=errors.IDEMPOTENCY_CONFLICT,
        )
    return found


async def remember(
    session: AsyncSession,
    account_id: str,
    key: str,
    body_hash: str,
    status_code: int,
    response: dict[str, Any],
    clock: Clock,
) -> None:
    await repo.add_idempotency(
        session,
        {
            "account_id": account_id,
            "key": key,
            "request_hash": body_hash,
            "status_code": status_code,
            "response": response,
            "created_at": clock.now(),
        },
    )
