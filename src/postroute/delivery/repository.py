"""All SQL of the delivery queue: claim with leases, load what to send, and the writes of
outcomes (described into a :class:`~postroute.db.changes.Changes`, guarded by the leases)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db import column_bind
from postroute.db.changes import Changes
from postroute.kit.clock import as_utc
from postroute.models import Delivery, DeliveryAttempt, Message, MessageContent
from postroute.models.base import table_of
from postroute.models.queue import LEASED, QUEUED


class Claimed(NamedTuple):  # one per claimed message: a tuple is the cheapest record
    message_id: str
    account_id: str
    pool_id: str | None
    attempts: int  # attempts made, counting those lost with an expired lease
    created_at: datetime


async def claim(
    session: AsyncSession, owner: str, now: datetime, lease: timedelta, limit: int
) -> list[Claimed]:
    """Lease up to ``limit`` due rows. An expired lease is due again (next_attempt_at = expiry).

    A row still ``leased`` when it is claimed is one whose worker stopped (or ran past
    its lease) before recording an outcome: the attempt it had in flight counts
    (``attempts`` + 1), and the message's own ``attempts`` stays behind until the
    worker records that lost attempt with the next outcome (see ``Envelope.attempts``).

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets many workers claim side by side. SQLite
    renders no FOR UPDATE; its write lock (BEGIN IMMEDIATE) serialises claimers instead.
    """
    expires = now + lease
    due = (
        sa.select(Delivery.message_id)
        .where(Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        sa.update(Delivery)
        .where(Delivery.message_id.in_(due.scalar_subquery()))
        .values(
            state=LEASED,
            lease_owner=owner,
            lease_expires_at=expires,
            next_attempt_at=expires,
            attempts=Delivery.attempts + sa.case((Delivery.state == LEASED, 1), else_=0),
        )
        .returning(
            Delivery.message_id,
            Delivery.account_id,
            Delivery.pool_id,
            Delivery.attempts,
            Delivery.created_at,
        )
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(stmt)).all()
    return [Claimed(r[0], r[1], r[2], r[3], as_utc(r[4])) for r in rows]


class Envelope(NamedTuple):
    """What the sender needs for one message (made per claimed message: a tuple)."""

    message_id: str
    account_id: str
    content_id: str
    from_email: str
    to_email: str
    message_id_header: str
    attempts: int  # attempts recorded; fewer than the claim's when a lease was lost
    mail_from: str | None  # the client's envelope sender (SMTP)
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe: bool = False  # List-Unsubscribe headers


async def load_envelopes(session: AsyncSession, ids: Sequence[str]) -> dict[str, Envelope]:
    stmt = sa.select(
        Message.id,
        Message.account_id,
        Message.content_id,
        Message.from_email,
        Message.to_email,
        Message.message_id_header,
        Message.attempts,
        Message.mail_from,
        Message.track_opens,
        Message.track_clicks,
        Message.unsubscribe,
    ).where(Message.id.in_(ids))
    return {r[0]: Envelope(*r) for r in (await session.execute(stmt)).all()}


async def load_contents(session: AsyncSession, content_ids: Iterable[str]) -> dict[str, bytes]:
    stmt = sa.select(MessageContent.id, MessageContent.mime).where(
        MessageContent.id.in_(set(content_ids))
    )
    return {r[0]: r[1] for r in (await session.execute(stmt)).all()}


async def still_leased(session: AsyncSession, owner: str, ids: Sequence[str]) -> set[str]:
    """The rows this worker still holds (a lease that expired may have been taken over)."""
    if not ids:
        return set()
    stmt = sa.select(Delivery.message_id).where(
        Delivery.message_id.in_(ids), Delivery.lease_owner == owner
    )
    return set((await session.scalars(stmt)).all())


async def release(
    session: AsyncSession, owner: str, ids: Sequence[str], now: datetime, *, cut_off: bool = False
) -> None:
    """Give rows back untouched (shutdown): due at once, for any worker. ``cut_off``: their
    sending was interrupted, so they stay ``leased``: the next claim counts the attempt
    that may have been sent, as for an expired lease."""
    if ids:
        state = LEASED if cut_off else QUEUED
        stmt = (
            sa.update(Delivery)
            .where(Delivery.message_id.in_(ids), Delivery.lease_owner == owner)
            .values(state=state, lease_owner=None, lease_expires_at=None, next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.execute(stmt)


def _column(name: str) -> sa.BindParameter[Any]:
    return column_bind(table_of(Delivery), name, f"b_{name}")


_IN_CHUNK = 10_000  # ids per IN list (SQLite binds at most 32766 values)
_RESCHEDULE = (
    sa.update(Delivery)
    .where(
        Delivery.message_id == sa.bindparam("b_message_id"),
        Delivery.lease_owner == sa.bindparam("b_owner"),
    )
    .values(
        state=QUEUED,
        lease_owner=sa.null(),
        lease_expires_at=sa.null(),
        next_attempt_at=_column("next_attempt_at"),
        attempts=_column("attempts"),
        pool_id=_column("pool_id"),
    )
)


def guard_leases(changes: Changes, owner: str, ids: Sequence[str]) -> None:
    """``changes`` is written only while ``owner`` still leases every one of ``ids`` (on
    PostgreSQL the rows are locked until the commit): a lease that expired and was
    taken over by another worker is left to it (:class:`~postroute.db.changes.Stale`)."""
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        stmt = (
            sa.select(Delivery.message_id)
            .where(Delivery.lease_owner == owner, Delivery.message_id.in_(chunk))
            .order_by(Delivery.message_id)
            .with_for_update()
        )
        changes.guard(stmt, [(m,) for m in chunk])


def finish(changes: Changes, owner: str, ids: Sequence[str]) -> None:
    """Remove from the queue the rows of messages that reached a final state."""
    for start in range(0, len(ids), _IN_CHUNK):  # one statement: one step in SQLite
        chunk = ids[start : start + _IN_CHUNK]
        stmt = sa.delete(Delivery).where(
            Delivery.lease_owner == owner, Delivery.message_id.in_(chunk)
        )
        changes.execute_once(stmt)


def reschedule(changes: Changes, owner: str, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of ``message_id, next_attempt_at, attempts, pool_id``: back to the queue."""
    changes.execute(
        _RESCHEDULE, [{"b_owner": owner, **{f"b_{k}": v for k, v in r.items()}} for r in rows]
    )


def update_messages(changes: Changes, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of ``id`` and the columns to set (not the same columns in every row)."""
    changes.update(table_of(Message), "id", rows)


def add_attempts(changes: Changes, rows: Sequence[dict[str, Any]]) -> None:
    changes.insert(table_of(DeliveryAttempt), rows)
