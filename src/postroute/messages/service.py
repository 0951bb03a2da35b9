"""HTTP sends made into drafts of the submit path, and idempotency keys.

The submit path itself (plan, store, answer ids) is :mod:`postroute.messages.submit`,
the same for SMTP; reading messages back is :mod:`postroute.messages.views`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.db.changes import Changes
from postroute.kit.clock import Clock
from postroute.messages import repository as repo
from postroute.messages.compose import compose
from postroute.messages.fields import Address
from postroute.messages.planning import Draft, Recipient
from postroute.messages.schemas import SendRequest
from postroute.models import IdempotencyKey
from postroute.models.base import table_of

SOURCE = "api"


def drafts(requests: Sequence[SendRequest]) -> list[Draft]:
    """Validated send requests as drafts (their fields were checked by the schemas)."""
    return [_draft(req) for req in requests]


def _draft(req: SendRequest) -> Draft:
    def content(default_from: str | None, now: datetime) -> bytes:
        default = Address(email=default_from) if default_from else None
        return compose(req, date=now, default_from=default)

    sender = req.sender
    return Draft(
        source=SOURCE,
        sender=sender.email if sender is not None else None,
        recipients=[Recipient(kind, a.email) for kind, a in req.recipients()],
        subject=req.subject,
        tags=req.tags,
        metadata=dict(req.metadata),
        pool_ref=req.pool_ref,
        track_opens=req.track_opens,  # None: the account's default
        track_clicks=req.track_clicks,
        unsubscribe=req.unsubscribe,
        content=content,
    )


# -- idempotency ---------------------------------------------------------------------------


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def idempotent_replay(
    session: AsyncSession,
    account_id: str,
    key: str,
    body_hash: str,
    clock: Clock,
    ttl: timedelta,
) -> IdempotencyKey | None:
    """The stored reply for a retried request, None for a new one (or one whose key is
    older than ``ttl``: :func:`remembered` replaces it); a reused key with another body
    is a conflict. Reads only."""
    found = await repo.get_idempotency(session, account_id, key)
    if found is None or clock.now() - found.created_at > ttl:
        return None
    if found.request_hash != body_hash:
        raise errors.DomainError(
            "this Idempotency-Key was used with a different request body",
            code=errors.IDEMPOTENCY_CONFLICT,
        )
    return found


_KEYS = table_of(IdempotencyKey)


def remembered(
    account_id: str,
    key: str,
    body_hash: str,
    status_code: int,
    response: dict[str, Any],
    now: datetime,
    ttl: timedelta,
) -> Changes:
    """The key's row, written with the messages it sent (an expired row of the same key
    is replaced). A concurrent request with the same key fails the write (IntegrityError):
    its reply is then the one to replay."""
    changes = Changes()
    changes.execute_once(
        sa.delete(_KEYS).where(
            _KEYS.c.account_id == account_id,
            _KEYS.c.key == key,
            _KEYS.c.created_at < now - ttl,
        )
    )
    row = {
        "account_id": account_id,
        "key": key,
        "request_hash": body_hash,
        "status_code": status_code,
        "response": response,
        "created_at": now,
    }
    changes.insert(_KEYS, [row])
    return changes
