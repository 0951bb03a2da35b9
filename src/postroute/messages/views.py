"""Reading messages back: list with filters and cursor, detail with timeline, raw MIME."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.config import Settings
from postroute.domains.names import from_domain
from postroute.domains.signing import NoReturnPath, SigningBook
from postroute.events.schemas import EventOut, event_out
from postroute.kit.crypto import SecretBox
from postroute.messages import repository as repo
from postroute.messages.schemas import MessageFilter
from postroute.models import Message
from postroute.preparation import Outgoing, prepare

# The statuses a message row takes (events.py names them): queued until a relay answers.
MessageStatus = Literal["queued", "sent", "deferred", "bounced", "dropped"]
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"  # base64url of a message id
WHEN = "ISO 8601, UTC."
_MESSAGE_ID = re.compile(r"msg_[0-9A-Za-z]{1,60}")


class MessageOut(BaseModel):
    id: str = Field(examples=["msg_0123456789ABCDEFGHIJKLMNOP"])
    batch_id: str = Field(description="The submission it came with.")
    message_id: str = Field(description="Its Message-ID header.")
    source: Literal["api", "smtp"] = Field(description="How it was submitted.")
    from_: str = Field(serialization_alias="from", examples=["shop@example.com"])
    to: str = Field(description="This message's one recipient.", examples=["a@example.org"])
    recipient_type: Literal["to", "cc", "bcc"] = Field(description="How `to` was addressed.")
    subject: str = Field(examples=["Your order"])
    status: str = Field(
        description="`queued` (waiting or being sent), `sent` (the relay took it), "
        "`deferred` (will be retried), `bounced` (refused for good), `dropped` (given up).",
        examples=["sent"],
    )
    pool_id: str | None = Field(description="The pool it went (or goes) through.")
    requested_pool: str | None = Field(description="The `pool` the request named.")
    route_note: str | None = Field(description="Why this pool, when not the one asked for.")
    tags: list[str] = Field(examples=[["receipt"]])
    metadata: dict[str, str] = Field(examples=[{"order": "1234"}])
    attempts: int = Field(description="Delivery attempts so far.")
    last_reply: str | None = Field(description="The relay's last reply.")
    relay_queue_id: str | None = Field(description="The relay's queue id (`queued as X`).")
    created_at: datetime = Field(description=WHEN)
    updated_at: datetime = Field(description="Last change of status.")


class AttemptOut(BaseModel):
    number: int = Field(description="1 for the first attempt.")
    pool_id: str | None = Field(description="The pool tried.")
    outcome: str = Field(
        description="`sent`, `deferred`, `bounced`, `relay_down` (the relay could not be "
        "used) or `unknown_outcome` (the worker stopped before recording the reply).",
        examples=["sent"],
    )
    reply_code: int | None = Field(description="The relay's SMTP reply code.", examples=[250])
    reply_text: str | None = Field(examples=["2.0.0 Ok: queued as 4Xk2"])
    error_code: str | None = Field(description="Why the relay could not be used.")
    started_at: datetime = Field(description=WHEN)
    finished_at: datetime = Field(description=WHEN)


class MessageDetail(MessageOut):
    events: list[EventOut] = Field(description="The timeline, oldest first.")
    delivery_attempts: list[AttemptOut] = Field(description="Oldest first.")


class MessageList(BaseModel):
    data: list[MessageOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


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
    except (binascii.Error, ValueError):  # ValueError: not ASCII, or not UTF-8 once decoded
        value = ""
    if not _MESSAGE_ID.fullmatch(value):  # what reaches SQL is shaped like an id
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
        event_out(
            id=e.id,
            type=e.type,
            created_at=e.created_at,
            data=e.data,
            message_id=m.id,
            account_id=m.account_id,
            recipient=m.to_email,
            tags=tags[m.id],
            metadata=m.metadata_,
        )
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


async def raw_message(
    session: AsyncSession,
    account_id: str,
    message_id: str,
    box: SecretBox,
    settings: Settings,
) -> bytes:
    """The message as relayed (or as it would be): the same ``prepare`` as the worker's,
    for the pool it went through (or was queued for), signed by its domain's active DKIM
    keys, with its List-Unsubscribe and tracked links (given ``settings``: the public URL
    and the secret keys); a ``Return-Path`` line on top shows its envelope sender, as
    the receiving server records it (it is not part of what is relayed)."""
    m = await _require(session, account_id, message_id)
    content = await repo.get_content(session, m.content_id)
    if content is None:
        raise errors.NotFound(f"the content of message {message_id!r} is gone")
    outgoing = Outgoing(
        m.id,
        m.account_id,
        m.message_id_header,
        m.from_email,
        m.to_email,
        content,
        m.content_id,
        m.mail_from,
        m.track_opens,
        m.track_clicks,
        m.unsubscribe,
    )
    book = SigningBook(box, settings)
    await book.refresh(session, [account_id])
    domain = from_domain(m.from_email)
    try:
        signing = book.signing(account_id, domain, m.id)
    except NoReturnPath:
        signing = None  # dropped at delivery: shown unsigned
    prepared = prepare(outgoing, m.pool_id, signing, links=book.links(account_id, domain))
    return f"Return-Path: <{prepared.mail_from}>\r\n".encode() + prepared.data
