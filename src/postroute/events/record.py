"""The only way to write an event: :func:`record`, into the caller's transaction.

Every event is written in the same transaction as the change it reports: the caller
describes that change as a :class:`~postroute.db.changes.Changes` and records its
events into it. This is where a webhook outbox row and the analytics counters of an
event are added too, so that no event can be written without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postroute.db.changes import Changes
from postroute.kit import ids
from postroute.models import MessageEvent
from postroute.models.base import table_of

_EVENTS = table_of(MessageEvent)


@dataclass(frozen=True, slots=True)
class Event:
    """One event, before it is written."""

    type: str  # one of events.names
    account_id: str
    message_id: str | None  # None for an event not about one message (domain.failing)
    at: datetime
    data: dict[str, Any]


def record(changes: Changes, events: list[Event]) -> list[str]:
    """Add ``events`` to ``changes`` (one multi-row insert); their new ids, in order."""
    rows: list[dict[str, Any]] = [
        {
            "id": ids.new_id(ids.EVENT),
            "account_id": e.account_id,
            "message_id": e.message_id,
            "type": e.type,
            "created_at": e.at,
            "data": e.data,
        }
        for e in events
    ]
    changes.insert(_EVENTS, rows)
    return [str(row["id"]) for row in rows]
