"""Messages (one per recipient), their shared content, tags, events and delivery attempts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from postroute.models.base import Base


class MessageContent(Base):
    """The prepared MIME shared by every recipient of one submission.

    Per-recipient headers (Message-ID, X-Postroute-*) are not stored here: they are
    derived from the message row and put in front of this content when relaying.
    """

    __tablename__ = "message_contents"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    mime: Mapped[bytes] = mapped_column(sa.LargeBinary)
    size: Mapped[int]
    created_at: Mapped[datetime]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        sa.Index("ix_messages_account_id_id", "account_id", "id"),
        sa.Index("ix_messages_account_status", "account_id", "status", "id"),
        sa.Index("ix_messages_account_to", "account_id", "to_email", "id"),
        sa.Index("ix_messages_account_pool", "account_id", "pool_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(40))
    batch_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    content_id: Mapped[str] = mapped_column(sa.String(40), index=True)
    source: Mapped[str] = mapped_column(sa.String(8))  # "api" | "smtp"
    from_email: Mapped[str] = mapped_column(sa.String(320))
    # the envelope sender an SMTP client gave (MAIL FROM); "" for the null sender <>
    mail_from: Mapped[str | None] = mapped_column(sa.String(320))
    to_email: Mapped[str] = mapped_column(sa.String(320))
    recipient_type: Mapped[str] = mapped_column(sa.String(4))  # to | cc | bcc
    subject: Mapped[str] = mapped_column(sa.Text)
    message_id_header: Mapped[str] = mapped_column(sa.String(400))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", sa.JSON, default=dict)
    requested_pool: Mapped[str | None] = mapped_column(sa.String(200))
    pool_id: Mapped[str | None] = mapped_column(sa.String(40))
    route_note: Mapped[str | None] = mapped_column(sa.Text)
    track_opens: Mapped[bool] = mapped_column(default=False)
    track_clicks: Mapped[bool] = mapped_column(default=False)
    unsubscribe: Mapped[bool] = mapped_column(default=False)  # List-Unsubscribe headers
    status: Mapped[str] = mapped_column(sa.String(12))
    attempts: Mapped[int] = mapped_column(default=0)
    last_reply: Mapped[str | None] = mapped_column(sa.Text)
    relay_queue_id: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MessageTag(Base):
    __tablename__ = "message_tags"
    __table_args__ = (sa.Index("ix_message_tags_account_tag", "account_id", "tag", "message_id"),)

    message_id: Mapped[str] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(40))


class MessageEvent(Base):
    __tablename__ = "message_events"
    __table_args__ = (sa.Index("ix_message_events_account_id_id", "account_id", "id"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(40))
    # None for an event about something else than one message (``domain.failing``)
    message_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(sa.String(24))
    created_at: Mapped[datetime]
    data: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)


class DeliveryAttempt(Base):
    """One try of one message at one pool, with the relay's reply."""

    __tablename__ = "delivery_attempts"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.String(40))
    message_id: Mapped[str] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int]
    pool_id: Mapped[str | None] = mapped_column(sa.String(40))
    # sent | deferred | bounced | relay_down | unknown_outcome (the relay may have taken it)
    outcome: Mapped[str] = mapped_column(sa.String(16))
    reply_code: Mapped[int | None]
    reply_text: Mapped[str | None] = mapped_column(sa.Text)
    error_code: Mapped[str | None] = mapped_column(sa.String(40))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    account_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int]
    response: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(index=True)
