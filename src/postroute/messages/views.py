"""Reading messages back: list with filters and cursor, detail with timeline, raw MIME."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.messages import repository as repo
from postroute.messages.prepare import prepared_mime
from postroute.messages.repository import MessageFilter
from postroute.models import Message


class MessageOut(BaseModel):
    id: str
    batch_id: str
    message_id: str = Field(description="The Message-ID header")
    source: str
    from_: str = Field(serialization_alias="from")
    to: str
    recipient_type: str
    subject: str
    status: str
    pool_id: str | None
    requested_pool: str | None
    route_note: str | None
    tags: list[str]
    metadata: dict[str, str]
    attempts: int
    last_reply: str | None
    relay_queue_id: str | None
    created_at: datetime
    updated_at: datetime


class EventOut(BaseModel):
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any]


class AttemptOut(BaseModel):
    number: int
    pool_id: str | None
    outcome: str
    reply_code: int | None
    reply_text: str | None
    error_code: str | None
    started_at: datetime
    finished_at: datetime


class MessageDetail(MessageOut):
    events: list[EventOut]
    delivery_attempts: list[AttemptOut]


class MessageList(BaseModel):
    data: list[MessageOut]
    next_cursor: str | None


def _out(m: Message, tags: list[str]) -> dict[str, Any]:
    return {
        "id": m.id,
        "batch_id": m.batch_id,
        "message_id": m.message_id_header,
        "source": m.source,
        "from_": m.from_email,
        "to": m.to_email,
        "recipient_type": m.recipient_type,
        "subject": m.subject,
        "status": m.status,
        "pool_id": m.pool_id,
        "requested_pool": m.requested_pool,
        "route_note": m.route_note,
        "tags": tags,
        "metadata": m.metadata_ or {},
        "attempts": m.attempts,
        "last_reply": m.last_reply,
        "relay_queue_id": m.relay_queue_id,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    }


def encode_cursor(message_id: str) -> str:
    return base64.urlsafe_b64encode(message_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        value = ""
    if not value.startswith("msg_"):
        raise errors.ValidationFailed(
            "invalid cursor",
            details=[{"field": "cursor", "message": "not a cursor from next_cursor"}],
        )
    return value


async def list_messages(
    session: AsyncSession, account_id: str, f: MessageFilter, cursor: str | None, limit: int
) -> MessageList:
    before = decode_cursor(cursor) if cursor else None
    rows = list(await repo.list_messages(session, account_id, f, before, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    tags = await repo.tags_of(session, [m.id for m in rows])
    data = [MessageOut(**_out(m, tags[m.id])) for m in rows]
    return MessageList(data=data, next_cursor=encode_cursor(rows[-1].id) if more else None)


async def _require(session: AsyncSession, account_id: str, message_id: str) -> Message:
    message = await repo.get_message(session, account_id, message_id)
    if message is None:
        raise errors.NotFound(f"no message {message_id!r}")
    return message


async def message_detail(session: AsyncSession, account_id: str, message_id: str) -> MessageDetail:
    m = await _require(session, account_id, message_id)
    tags = await repo.tags_of(session, [m.id])
    timeline = [
        EventOut(id=e.id, type=e.type, created_at=e.created_at, data=e.data or {})
        for e in await repo.events_of(session, m.id)
    ]
    attempts = [
        AttemptOut(
            number=a.number,
            pool_id=a.pool_id,
            outcome=a.outcome,
            reply_code=a.reply_code,
            reply_text=a.reply_text,
            error_code=a.error_code,
            started_at=a.started_at,
            finished_at=a.finished_at,
        )
        for a in await repo.attempts_of(session, m.id)
    ]
    return MessageDetail(**_out(m, tags[m.id]), events=timeline, delivery_attempts=attempts)


@dataclass(frozen=True)
class _Addressed:
    message_id: str
    account_id: str
    message_id_header: str


async def raw_message(session: AsyncSession, account_id: str, message_id: str) -> bytes:
    m = await _require(session, account_id, message_id)
    content = await repo.get_content(session, m.content_id)
    if content is None:
        raise errors.NotFound(f"the content of message {message_id!r} is gone")
    return prepared_mime(_Addressed(m.id, m.account_id, m.message_id_header), content, m.pool_id)
