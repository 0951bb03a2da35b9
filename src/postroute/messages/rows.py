"""A checked draft as rows: its content once, then per recipient a message row, its
tags, and either a queue row and a ``queued`` event or, for a suppressed recipient, the
message recorded ``dropped`` (event ``dropped``, ``reason: suppressed``) with no queue
row; and the reply, where a suppressed recipient carries ``recipient_suppressed``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postroute import errors, events
from postroute.db.changes import Changes
from postroute.events.record import Event, record
from postroute.kit import ids
from postroute.messages import repository as repo
from postroute.messages.compose import new_message_id
from postroute.messages.drafts import Draft
from postroute.messages.schemas import SendResponse, SentMessage
from postroute.models import SmtpPool
from postroute.models.queue import QUEUED
from postroute.suppressions.rules import key

SUPPRESSED = "suppressed"


@dataclass(frozen=True)
class Switches:
    """What the message rows say about tracking and List-Unsubscribe (the draft's, else
    the account's defaults)."""

    track_opens: bool
    track_clicks: bool
    unsubscribe: bool


def route_note(pool: SmtpPool, ref: str | None) -> str | None:
    """Why a send without a pool went where it went, when that was not the default."""
    if ref is None and not pool.is_default:
        return f"no active default pool; used {pool.name}, the first active pool by priority"
    return None


def add_rows(
    changes: Changes,
    account_id: str,
    draft: Draft,
    pool: SmtpPool,
    sender: str,
    now: datetime,
    switches: Switches,
    suppressed: Mapping[str, str],
) -> SendResponse:
    """The draft's rows into ``changes``; its reply. ``suppressed``: address key ->
    reason, of the recipients the account suppresses."""
    content = draft.content(None if draft.sender else sender, now)
    batch_id = ids.new_id(ids.BATCH)
    content_id = ids.new_id(ids.CONTENT)
    domain = sender.rpartition("@")[2].lower()
    note = route_note(pool, draft.pool_ref)
    contents = [
        {
            "id": content_id,
            "account_id": account_id,
            "mime": content,
            "size": len(content),
            "created_at": now,
        }
    ]
    messages: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    queue: list[dict[str, Any]] = []
    happened: list[Event] = []
    sent: list[SentMessage] = []
    for rcpt in draft.recipients:
        message_id = ids.new_id(ids.MESSAGE)
        header = new_message_id(message_id, domain)
        reason = suppressed.get(key(rcpt.email))
        messages.append(
            {
                "id": message_id,
                "account_id": account_id,
                "batch_id": batch_id,
                "content_id": content_id,
                "source": draft.source,
                "from_email": sender,
                "mail_from": draft.mail_from,
                "to_email": rcpt.email,
                "recipient_type": rcpt.kind,
                "subject": draft.subject,
                "message_id_header": header,
                "metadata": draft.metadata,
                "requested_pool": draft.pool_ref,
                "pool_id": pool.id,
                "route_note": note,
                "track_opens": switches.track_opens,
                "track_clicks": switches.track_clicks,
                "unsubscribe": switches.unsubscribe,
                "status": events.QUEUED if reason is None else events.DROPPED,
                "attempts": 0,
                "last_reply": None if reason is None else f"{SUPPRESSED}: {reason}",
                "created_at": now,
                "updated_at": now,
            }
        )
        tags.extend(
            {"message_id": message_id, "tag": t, "account_id": account_id}
            for t in dict.fromkeys(draft.tags)
        )
        if reason is not None:
            data = {"reason": SUPPRESSED, "suppression_reason": reason, "source": draft.source}
            happened.append(Event(events.DROPPED, account_id, message_id, now, data))
            sent.append(
                SentMessage.model_construct(
                    id=message_id,
                    to=rcpt.email,
                    message_id=header,
                    error=errors.RECIPIENT_SUPPRESSED,
                    suppression_reason=reason,
                )
            )
            continue
        queue.append(
            {
                "message_id": message_id,
                "account_id": account_id,
                # a named pool stays asked for; otherwise the default at delivery time
                "pool_id": pool.id if draft.pool_ref else None,
                "state": QUEUED,
                "next_attempt_at": now,
                "attempts": 0,
                "created_at": now,
            }
        )
        data = {"pool_id": pool.id, "source": draft.source}
        happened.append(Event(events.QUEUED, account_id, message_id, now, data))
        # Replies built from values made here: nothing to validate.
        sent.append(SentMessage.model_construct(id=message_id, to=rcpt.email, message_id=header))
    repo.add_submission(changes, contents, messages, tags, queue)
    record(changes, happened)
    return SendResponse.model_construct(id=batch_id, messages=sent)
