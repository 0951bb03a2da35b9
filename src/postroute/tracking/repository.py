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


@dataclass(frozen=True, slots=True)
class Known:
    """What a drain needs to know of one message."""

    account_id: str
    sent_at: datetime | None  # its first `sent` event
    first_open: bool  # it has its first human open already
    first_click: bool


def _event(message_id: Any, type_: str) -> sa.ColumnElement[bool]:
    return sa.and_(MessageEvent.message_id == message_id, MessageEvent.type == type_)


def _has_first(type_: str) -> sa.Exists:
    first = MessageEvent.data["first"].as_boolean().is_(True)
    return sa.exists().where(_event(Message.id, type_), first)


_SENT_AT = (
    sa.select(sa.func.min(MessageEvent.created_at))
    .where(_event(Message.id, names.SENT))
    .scalar_subquery()
)


async def known(session: AsyncSession, message_ids: Iterable[str]) -> dict[str, Known]:
    """The messages that exist among ``message_ids``, each with its account, when it was
    sent and whether it had its first human open and click (one query per chunk)."""
    found: dict[str, Known] = {}
    for chunk in _chunks(message_ids):
        stmt = sa.select(
            Message.id,
            Message.account_id,
            _SENT_AT,
            _has_first(names.OPENED),
            _has_first(names.CLICKED),
        ).where(Message.id.in_(chunk))
        for message_id, account_id, sent_at, opened, clicked in await session.execute(stmt):
            sent = None if sent_at is None else as_utc(sent_at)
            found[message_id] = Known(account_id, sent, bool(opened), bool(clicked))
    return found


def _between(
    chunk: list[str], types: tuple[str, ...], since: datetime, until: datetime
) -> sa.ColumnElement[bool]:
    return sa.and_(
        MessageEvent.message_id.in_(chunk),
        MessageEvent.type.in_(types),
        MessageEvent.created_at >= since,
        MessageEvent.created_at <= until,
    )


_HIT_ID = MessageEvent.data["hit_id"].as_string()


async def hit_ids_between(
    session: AsyncSession, message_ids: Iterable[str], since: datetime, until: datetime
) -> set[str]:
    """The hit ids of the messages' `opened` and `clicked` events in [since, until]."""
    found: set[str] = set()
    for chunk in _chunks(message_ids):
        stmt = sa.select(_HIT_ID).where(_between(chunk, ENGAGEMENT, since, until))
        found.update(h for (h,) in await session.execute(stmt) if h)
    return found


@dataclass(frozen=True, slots=True)
class StoredClick:
    message_id: str
    at: datetime
    link_index: int
    hit_id: str | None


async def clicks_between(
    session: AsyncSession, message_ids: Iterable[str], since: datetime, until: datetime
) -> list[StoredClick]:
    """The messages' `clicked` events in [since, until]."""
    found: list[StoredClick] = []
    for chunk in _chunks(message_ids):
        stmt = sa.select(
            MessageEvent.message_id,
            MessageEvent.created_at,
            MessageEvent.data["link_index"].as_integer(),
            _HIT_ID,
        ).where(_between(chunk, (names.CLICKED,), since, until))
        for message_id, at, index, hit_id in await session.execute(stmt):
            if message_id is not None and index is not None:
                found.append(StoredClick(message_id, as_utc(at), index, hit_id))
    return found


# -- one-click unsubscribe ---------------------------------------------------------------


async def recipient_of(session: AsyncSession, message_id: str) -> tuple[str, str] | None:
    """(account id, recipient address) of a message; None if there is no such message."""
    stmt = sa.select(Message.account_id, Message.to_email).where(Message.id == message_id)
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1])


# Built once (the SQLite path compiles a statement given with its parameters once).
_UNSUBSCRIBED = sa.select(sa.func.count()).where(
    MessageEvent.message_id == sa.bindparam("message_id"),
    MessageEvent.type == names.UNSUBSCRIBED,
)
_LOCK = sa.select(Message.id).where(Message.id == sa.bindparam("message_id")).with_for_update()


async def is_unsubscribed(session: AsyncSession, message_id: str) -> bool:
    return bool(await session.scalar(_UNSUBSCRIBED, {"message_id": message_id}))


def guard_once(changes: Changes, message_id: str) -> None:
    """The write holds only if the message exists and has no `unsubscribed` event yet
    (else :class:`~postroute.db.changes.Stale`). The message row is locked first
    (PostgreSQL), so that of two requests at once the second sees the first's event;
    SQLite has one writer anyway."""
    changes.guard(_LOCK, [(message_id,)], {"message_id": message_id})
    changes.guard(_UNSUBSCRIBED, [(0,)], {"message_id": message_id})
