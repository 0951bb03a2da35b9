"""All SQL of tracking: what a drain reads about the messages of its hits, and the
one-click unsubscribe's read and guarded write."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db.changes import Changes
from postroute.events import names
from postroute.kit.clock import as_utc
from postroute.models import Message, MessageEvent

_CHUNK = 1_000  # ids per IN list
ENGAGEMENT = (names.OPENED, names.CLICKED)


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    wanted = sorted(set(values))
    for start in range(0, len(wanted), _CHUNK):
        yield wanted[start : start + _CHUNK]


async def accounts_of(session: AsyncSession, message_ids: Iterable[str]) -> dict[str, str]:
    """The account of each message that exists (a message id -> its account id)."""
    found: dict[str, str] = {}
    for chunk in _chunks(message_ids):
        stmt = sa.select(Message.id, Message.account_id).where(Message.id.in_(chunk))
        found.update((m, a) for m, a in (await session.execute(stmt)).all())
    return found


async def sent_times(session: AsyncSession, message_ids: Iterable[str]) -> dict[str, datetime]:
    """When each message was first recorded `sent` (messages never sent are absent)."""
    found: dict[str, datetime] = {}
    for chunk in _chunks(message_ids):
        stmt = (
            sa.select(MessageEvent.message_id, sa.func.min(MessageEvent.created_at))
            .where(MessageEvent.message_id.in_(chunk), MessageEvent.type == names.SENT)
            .group_by(MessageEvent.message_id)
        )
        for message_id, at in (await session.execute(stmt)).all():
            if message_id is not None:
                found[message_id] = as_utc(at)
    return found


@dataclass(frozen=True, slots=True)
class Stored:
    """An `opened` or `clicked` event stored already."""

    message_id: str
    type: str
    at: datetime
    data: dict[str, Any]


async def engagement_between(
    session: AsyncSession, message_ids: Iterable[str], since: datetime, until: datetime
) -> list[Stored]:
    """The `opened` and `clicked` events of the messages that happened in [since, until]."""
    found: list[Stored] = []
    for chunk in _chunks(message_ids):
        stmt = sa.select(
            MessageEvent.message_id, MessageEvent.type, MessageEvent.created_at, MessageEvent.data
        ).where(
            MessageEvent.message_id.in_(chunk),
            MessageEvent.type.in_(ENGAGEMENT),
            MessageEvent.created_at >= since,
            MessageEvent.created_at <= until,
        )
        for message_id, type_, at, data in (await session.execute(stmt)).all():
            if message_id is not None:
                found.append(Stored(message_id, type_, as_utc(at), data or {}))
    return found


async def firsts(session: AsyncSession, message_ids: Iterable[str]) -> set[tuple[str, str]]:
    """(message id, event type) of the messages' stored first human open and click."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(message_ids):
        stmt = (
            sa.select(MessageEvent.message_id, MessageEvent.type)
            .where(
                MessageEvent.message_id.in_(chunk),
                MessageEvent.type.in_(ENGAGEMENT),
                MessageEvent.data["first"].as_boolean().is_(True),
            )
            .distinct()
        )
        found.update((m, t) for m, t in (await session.execute(stmt)).all() if m is not None)
    return found


# -- one-click unsubscribe ---------------------------------------------------------------


async def recipient_of(session: AsyncSession, message_id: str) -> tuple[str, str] | None:
    """(account id, recipient address) of a message; None if there is no such message."""
    stmt = sa.select(Message.account_id, Message.to_email).where(Message.id == message_id)
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1])


def _unsubscribed_count(message_id: str) -> sa.Select[int]:
    return sa.select(sa.func.count()).where(
        MessageEvent.message_id == message_id, MessageEvent.type == names.UNSUBSCRIBED
    )


async def is_unsubscribed(session: AsyncSession, message_id: str) -> bool:
    return bool(await session.scalar(_unsubscribed_count(message_id)))


def guard_once(changes: Changes, message_id: str) -> None:
    """The write holds only if the message exists and has no `unsubscribed` event yet
    (else :class:`~postroute.db.changes.Stale`). The message row is locked first
    (PostgreSQL), so that of two requests at once the second sees the first's event;
    SQLite has one writer anyway."""
    lock = sa.select(Message.id).where(Message.id == message_id).with_for_update()
    changes.guard(lock, [(message_id,)])
    changes.guard(_unsubscribed_count(message_id), [(0,)])
