"""The public shape of an event, the same everywhere it is shown (a message's timeline
now; the events API and webhook bodies use it too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from postroute.events import names

_TYPES = ", ".join(f"`{t}`" for t in names.MESSAGE_EVENTS)


class EventOut(BaseModel):
    id: str = Field(examples=["evt_0123456789ABCDEFGHIJKLMNOP"])
    type: str = Field(description=f"One of {_TYPES}.", examples=["sent"])
    created_at: datetime = Field(description="When it happened (UTC, ISO 8601).")
    message_id: str = Field(description="The message (one recipient) it is about.")
    account_id: str = Field(examples=["acct_0123456789ABCDEFGHIJKLMNOP"])
    recipient: str = Field(description="The message's recipient.")
    pool_id: str | None = Field(description="The pool concerned, when there is one.")
    tags: list[str] = Field(description="The message's tags.", examples=[["receipt"]])
    metadata: dict[str, str] = Field(description="The message's metadata.")
    data: dict[str, Any] = Field(
        description="Details by type: pool, attempt, the relay's reply, next attempt, reason..."
    )


def event_out(
    *,
    id: str,
    type: str,
    created_at: datetime,
    data: dict[str, Any] | None,
    message_id: str,
    account_id: str,
    recipient: str,
    tags: list[str],
    metadata: dict[str, str] | None,
) -> EventOut:
    """An event row with what it says about its message."""
    details = data or {}
    pool = details.get("pool_id")
    return EventOut(
        id=id,
        type=type,
        created_at=created_at,
        message_id=message_id,
        account_id=account_id,
        recipient=recipient,
        pool_id=pool if isinstance(pool, str) else None,
        tags=tags,
        metadata=metadata or {},
        data=details,
    )
