"""The suppression list's entry points: add (by hand, from an import), remove, read.
Writes go through the store as one ``Changes`` each; reads take a session."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.db.changes import Changes
from postroute.db.engine import begin_read, transaction
from postroute.kit import cursors, ids
from postroute.models import Suppression
from postroute.models.base import table_of
from postroute.runtime import Runtime
from postroute.suppressions import repository as repo
from postroute.suppressions.rules import HARD_BOUNCE, MANUAL, REASONS, SOURCE_API, entry, key

IMPORT_CHUNK = 1_000  # addresses per write of an import


def _expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is not None and expires_at <= now:
        raise errors.ValidationFailed(
            "expires_at is in the past",
            details=[{"field": "expires_at", "message": "must be in the future"}],
        )
    return expires_at


async def add(
    rt: Runtime,
    account_id: str,
    email: str,
    *,
    reason: str = MANUAL,
    source: str = SOURCE_API,
    expires_at: datetime | None = None,
) -> Suppression:
    """Add ``email`` (checked already) to the account's list; an entry that lasts
    longer is kept. The entry as it is now."""
    now = rt.clock.now()
    row = entry(account_id, email, reason, source, now)
    row["expires_at"] = _expiry(expires_at, now)
    changes = Changes()
    repo.upsert(changes, [row])
    await rt.store.write(changes)
    async with transaction(rt.sessions) as session:
        found = await repo.get(session, account_id, row["email"])
    assert found is not None, "an entry just written"
    return found


async def add_many(
    rt: Runtime,
    account_id: str,
    rows: Sequence[dict[str, str]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """An import's rows (``email``, ``reason``, ``source``; checked already), one write
    per :data:`IMPORT_CHUNK` (``progress`` told each chunk's size); how many were
    written. Hard bounces expire as the relay's do."""
    now = rt.clock.now()
    bounce_for = timedelta(days=rt.settings.bounce_suppression_days)
    done = 0
    for start in range(0, len(rows), IMPORT_CHUNK):
        part = rows[start : start + IMPORT_CHUNK]
        changes = Changes()
        repo.upsert(
            changes,
            [
                entry(
                    account_id,
                    r["email"],
                    r["reason"],
                    r["source"],
                    now,
                    bounce_for if r["reason"] == HARD_BOUNCE else None,
                )
                for r in part
            ],
        )
        await rt.store.write(changes)
        done += len(part)
        if progress is not None:
            progress(len(part))
    return done


_TABLE = table_of(Suppression)


async def remove(rt: Runtime, account_id: str, email: str) -> None:
    """Take ``email`` off the list (404 when it is not on it): sends to it go again."""
    address = key(email)
    async with transaction(rt.sessions) as session:
        await begin_read(session)
        if await repo.get(session, account_id, address) is None:
            raise errors.NotFound(f"{address} is not on the suppression list")
    changes = Changes()
    changes.execute_once(
        sa.delete(_TABLE).where(_TABLE.c.account_id == account_id, _TABLE.c.email == address)
    )
    await rt.store.write(changes)


async def require(session: AsyncSession, account_id: str, email: str) -> Suppression:
    found = await repo.get(session, account_id, key(email))
    if found is None:
        raise errors.NotFound(f"{key(email)} is not on the suppression list")
    return found


async def page(
    session: AsyncSession,
    account_id: str,
    *,
    reason: str | None,
    email: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Suppression], str | None]:
    """Newest first; the next page's cursor while there are more."""
    if reason is not None and reason not in REASONS:
        raise errors.ValidationFailed(f"reason must be one of {', '.join(REASONS)}")
    before = cursors.decode(cursor, ids.SUPPRESSION) if cursor else None
    found = await repo.list_page(
        session, account_id, reason=reason, email=email, before_id=before, limit=limit + 1
    )
    more = len(found) > limit
    shown = found[:limit]
    return shown, cursors.encode(shown[-1].id) if more else None
