"""All SQL for messages: a submission's rows, reads, idempotency keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db.changes import Changes
from postroute.messages.schemas import MessageFilter
from postroute.models import (
    Delivery,
    DeliveryAttempt,
    IdempotencyKey,
    Message,
    MessageContent,
    MessageEvent,
    MessageTag,
)
from postroute.models.base import table_of

Rows = list[dict[str, Any]]


def add_submission(
    changes: Changes, contents: Rows, messages: Rows, tags: Rows, queue: Rows
) -> None:
    """A submission's rows, parents first: its content (once), then per recipient a
    message row, its tags and a queue row (as multi-row inserts: Core statements, the
    ORM's bulk path costs about twice the CPU per row and adds nothing here)."""
    changes.insert(table_of(MessageContent), contents)
    changes.insert(table_of(Message), messages)
    changes.insert(table_of(MessageTag), tags)
    changes.insert(table_of(Delivery), queue)


async def list_messages(
    session: AsyncSession, account_id: str, f: MessageFilter, before_id: str | None, limit: int
) -> Sequence[Message]:
    """Newest first; ``before_id`` is the cursor (ids sort by creation time)."""
    stmt = sa.select(Message).where(Message.account_id == account_id)
    if f.status:
        stmt = stmt.where(Message.status == f.status)
    if f.to:
        stmt = stmt.where(Message.to_email == f.to.lower())
    if f.pool_id:
        stmt = stmt.where(Message.pool_id == f.pool_id)
    if f.since:
        stmt = stmt.where(Message.created_at >= f.since)
    if f.until:
        stmt = stmt.where(Message.created_at < f.until)
    if f.tag:
        tagged = sa.select(MessageTag.message_id).where(
            MessageTag.account_id == account_id, MessageTag.tag == f.tag
        )
        stmt = stmt.where(Message.id.in_(tagged))
    if before_id:
        stmt = stmt.where(Message.id < before_id)
    stmt = stmt.order_by(Message.id.desc()).limit(limit)
    return (await session.scalars(stmt)).all()


async def get_message(session: AsyncSession, account_id: str, message_id: str) -> Message | None:
    stmt = sa.select(Message).where(Message.account_id == account_id, Message.id == message_id)
    return await session.scalar(stmt)


async def tags_of(session: AsyncSession, message_ids: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {m: [] for m in message_ids}
    if message_ids:
        stmt = sa.select(MessageTag.message_id, MessageTag.tag).where(
            MessageTag.message_id.in_(message_ids)
        )
        for message_id, tag in (await session.execute(stmt)).all():
            out[message_id].append(tag)
    return out


async def events_of(session: AsyncSession, message_id: str) -> Sequence[MessageEvent]:
    stmt = (
        sa.select(MessageEvent)
        .where(MessageEvent.message_id == message_id)
        .order_by(MessageEvent.created_at, MessageEvent.id)
    )
    return (await session.scalars(stmt)).all()


async def attempts_of(session: AsyncSession, message_id: str) -> Sequence[DeliveryAttempt]:
    stmt = (
        sa.select(DeliveryAttempt)
        .where(DeliveryAttempt.message_id == message_id)
        .order_by(DeliveryAttempt.number, DeliveryAttempt.started_at)
    )
    return (await session.scalars(stmt)).all()


async def get_content(session: AsyncSession, content_id: str) -> bytes | None:
    stmt = sa.select(MessageContent.mime).where(MessageContent.id == content_id)
    return await session.scalar(stmt)


async def get_idempotency(
    session: AsyncSession, account_id: str, key: str
) -> IdempotencyKey | None:
    return await session.get(IdempotencyKey, (account_id, key))
