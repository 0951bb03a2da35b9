"""The ``record`` step's second half: what happened to claimed messages, as rows
(:mod:`postroute.delivery.outcomes`), and pool health, as one write
(:func:`changes_for`), guarded by the leases: only messages this worker still leases
are written (a lease that expired and was taken over is left to its new owner)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from postroute.db.changes import Changes, Stale
from postroute.db.engine import begin_read, transaction
from postroute.delivery import repository as repo
from postroute.delivery.health import HealthBook
from postroute.delivery.outcomes import Rows
from postroute.events.record import record
from postroute.pools import repository as pools_repo
from postroute.runtime import Runtime
from postroute.suppressions import repository as suppressions_repo

log = logging.getLogger("postroute.delivery")


def changes_for(rows: Rows, owner: str, book: HealthBook) -> Changes:
    """``rows`` as one write, only while this worker still leases every message of it
    (else :class:`~postroute.db.changes.Stale`: see :func:`only`). Pools whose health
    is due (``HealthBook.needs_write``) get their row written too."""
    changes = Changes()
    repo.guard_leases(changes, owner, [m["id"] for m in rows.messages])
    repo.finish(changes, owner, rows.finished)
    repo.reschedule(changes, owner, rows.rescheduled)
    repo.add_attempts(changes, rows.attempts)
    record(changes, rows.events)
    repo.update_messages(changes, rows.messages)
    if rows.suppressions:
        suppressions_repo.upsert(changes, rows.suppressions)
    for pool_id in set(rows.sent) | set(rows.refunds):
        day = rows.touched.get(pool_id)
        if day is not None:
            count = rows.sent[pool_id] - rows.refunds[pool_id]
            pools_repo.add_usage(changes, pool_id, day.date(), sent=count)
    for pool_id, when in health_due(rows, book):
        h = book.get(pool_id)
        pools_repo.write_health(
            changes,
            pool_id,
            failures=h.failures,
            down=h.down,
            down_until=h.down_until,
            effective_rate=h.effective_rate,
            last_error=h.last_error,
            checked_at=when,
            succeeded=pool_id in rows.succeeded,
        )
    return changes


def health_due(rows: Rows, book: HealthBook) -> list[tuple[str, datetime]]:
    """The pools whose health row the write of ``rows`` includes, and as of when."""
    return [(p, when) for p, when in rows.touched.items() if book.needs_write(p, when)]


def only(rows: Rows, owned: set[str]) -> Rows:
    """``rows`` for the messages in ``owned`` (the leases this worker still holds)."""

    def mine(row: dict[str, Any], key: str) -> bool:
        return str(row[key]) in owned

    return Rows(
        messages=[r for r in rows.messages if mine(r, "id")],
        events=[e for e in rows.events if e.message_id in owned],
        attempts=[r for r in rows.attempts if mine(r, "message_id")],
        finished=[m for m in rows.finished if m in owned],
        rescheduled=[r for r in rows.rescheduled if mine(r, "message_id")],
        sent=rows.sent,
        refunds=rows.refunds,
        touched=rows.touched,
        succeeded=rows.succeeded,
        suppressions=[r for r in rows.suppressions if r["source"] in owned],
        bounce_suppression=rows.bounce_suppression,
    )


async def write(
    runtime: Runtime, owner: str, book: HealthBook, rows: Rows
) -> list[tuple[str, datetime]]:
    """``rows`` as one write; a lease taken over meanwhile (``Stale``) leaves that message
    to its new owner and the rest is written. Returns the pools whose health row was
    written (for ``HealthBook.written`` after the commit)."""
    while True:
        due = health_due(rows, book)
        try:
            await runtime.store.write(changes_for(rows, owner, book))
            return due
        except Stale:
            ids = [m["id"] for m in rows.messages]
            async with transaction(runtime.sessions) as session:
                await begin_read(session)
                owned = await repo.still_leased(session, owner, ids)
            log.info(
                "%d leases were taken over before their outcomes were written",
                len(ids) - len(owned),
            )
            rows = only(rows, owned)
