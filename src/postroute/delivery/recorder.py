"""The ``record`` step: what happened to claimed messages as rows (attempts, events,
message status, queue changes, pool usage and pool health), and those rows as one
write (:func:`changes_for`), guarded by the leases: only messages this worker still
leases are written (a lease that expired and was taken over is left to its new owner).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from postroute import events
from postroute.db.changes import Changes, Stale
from postroute.db.engine import begin_read, transaction
from postroute.delivery import repository as repo
from postroute.delivery.dispatch import Hold
from postroute.delivery.flight import InFlight
from postroute.delivery.health import HealthBook
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.senders import POOL_DOWN, Report
from postroute.events.record import Event, record
from postroute.kit import ids
from postroute.pools import repository as pools_repo
from postroute.relay.results import (
    LEASE_LOST,
    Bounced,
    Deferred,
    Outcome,
    RelayDown,
    Sent,
    UnknownOutcome,
    reply_line,
)
from postroute.runtime import Runtime

log = logging.getLogger("postroute.delivery")


@dataclass
class Rows:
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    rescheduled: list[dict[str, Any]] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)  # pool -> +sent (no reservation)
    refunds: Counter[str] = field(default_factory=Counter)  # pool -> reserved, not sent
    touched: dict[str, datetime] = field(default_factory=dict)  # pools with news, and when
    succeeded: set[str] = field(default_factory=set)  # pools that took a message


def event_row(fl: InFlight, kind: str, when: datetime, data: dict[str, Any]) -> Event:
    return Event(kind, fl.claimed.account_id, fl.claimed.message_id, when, data)


def really_tried(fl: InFlight) -> list[Report]:
    """Reports of sends actually tried (a pool refused by the breaker was not tried)."""
    return [
        r
        for r in fl.reports
        if not (isinstance(r.outcome, RelayDown) and r.outcome.error_code == POOL_DOWN)
    ]


_KINDS: dict[type[object], str] = {Sent: "sent", Bounced: "bounced", Deferred: "deferred"}
_KINDS[UnknownOutcome] = "unknown_outcome"  # (RelayDown and the rest: "relay_down")


def _attempt(
    fl: InFlight, number: int, pool_id: str | None, o: Outcome, span: tuple[datetime, datetime]
) -> dict[str, Any]:
    if isinstance(o, RelayDown | UnknownOutcome):
        code = o.smtp_code if isinstance(o, RelayDown) else None
        text, error = o.detail, o.error_code
    else:
        code, text, error = o.code, o.text, None
    return {
        "id": ids.new_id(ids.ATTEMPT),
        "account_id": fl.claimed.account_id,
        "message_id": fl.claimed.message_id,
        "number": number,
        "pool_id": pool_id,
        "outcome": _KINDS.get(type(o), "relay_down"),
        "reply_code": code,
        "reply_text": text,
        "error_code": error,
        "started_at": span[0],
        "finished_at": span[1],
    }


def add_lost(rows: Rows, fl: InFlight, when: datetime) -> None:
    """Attempts lost with an expired lease (claimed more often than outcomes recorded):
    ``unknown_outcome``, pool unknown, noticed ``when``; they may have been sent."""
    lost = range(fl.envelope.attempts + 1, fl.claimed.attempts + 1)
    if lost and fl.envelope.attempts == 0:  # the lost one was the first
        rows.events.append(event_row(fl, events.PROCESSED, when, {"pool_id": None}))
    for number in lost:
        rows.attempts.append(_attempt(fl, number, None, LEASE_LOST, (when, when)))


def add_outcome(rows: Rows, fl: InFlight, policy: RetryPolicy, max_age_until: datetime) -> None:
    """A message whose tries are over for this claim (sent, bounced, deferred, dropped)."""
    claimed, attempt = fl.claimed, fl.claimed.attempts + 1
    tried = really_tried(fl)
    add_lost(rows, fl, tried[0].started_at)
    for report in fl.reports:
        rows.touched[report.job.pool_id] = report.finished_at
        taken = isinstance(report.outcome, Sent | UnknownOutcome)  # (the relay may have it)
        if taken != report.job.reserved:  # sent without a reservation, or reserved in vain
            (rows.sent if taken else rows.refunds)[report.job.pool_id] += 1
    for report in tried:
        o, span = report.outcome, (report.started_at, report.finished_at)
        rows.attempts.append(_attempt(fl, attempt, report.job.pool_id, o, span))
        if isinstance(o, Sent):
            rows.succeeded.add(report.job.pool_id)
    first, last = tried[0], tried[-1]
    outcome, pool_id, now = last.outcome, last.job.pool_id, last.finished_at
    if claimed.attempts == 0:
        rows.events.append(
            event_row(fl, events.PROCESSED, first.started_at, {"pool_id": first.job.pool_id})
        )
    reply = reply_line(outcome)
    base: dict[str, Any] = {"pool_id": pool_id, "attempt": attempt, "reply": reply}
    if len(tried) > 1:
        base["pools_tried"] = [r.job.pool_id for r in tried]
    message: dict[str, Any] = {
        "id": claimed.message_id,
        "attempts": attempt,
        "last_reply": reply,
        "pool_id": pool_id,
        "updated_at": now,
    }
    if fl.route_note:  # routed otherwise than asked at delivery (pool deleted, inactive...)
        message["route_note"] = fl.route_note
    if isinstance(outcome, Sent):
        queue_id = outcome.queue_id
        message.update(status=events.SENT, relay_queue_id=queue_id)
        rows.events.append(event_row(fl, events.SENT, now, {**base, "queue_id": queue_id}))
        rows.finished.append(claimed.message_id)
    elif isinstance(outcome, Bounced):
        message.update(status=events.BOUNCED)
        rows.events.append(event_row(fl, events.BOUNCED, now, {**base, "type": "hard"}))
        rows.finished.append(claimed.message_id)
    else:
        retry_at = policy.next_attempt(attempt, now)
        if retry_at is None or retry_at > max_age_until:
            message.update(status=events.DROPPED)
            data = {**base, "reason": f"gave up after {attempt} attempts"}
            rows.events.append(event_row(fl, events.DROPPED, now, data))
            rows.finished.append(claimed.message_id)
        else:
            message.update(status=events.DEFERRED)
            data = {**base, "next_attempt_at": retry_at.isoformat()}
            if isinstance(outcome, RelayDown | UnknownOutcome):
                data["error_code"] = outcome.error_code
            rows.events.append(event_row(fl, events.DEFERRED, now, data))
            # the pool asked for; after an unknown outcome, the one that may have it
            again = pool_id if isinstance(outcome, UnknownOutcome) else claimed.pool_id
            rows.rescheduled.append(
                {
                    "message_id": claimed.message_id,
                    "next_attempt_at": retry_at,
                    "attempts": attempt,
                    "pool_id": again,
                }
            )
    rows.messages.append(message)


def add_hold(rows: Rows, fl: InFlight, hold: Hold, now: datetime) -> None:
    """No pool can take the message now: it waits, without using an attempt."""
    claimed = fl.claimed
    add_lost(rows, fl, now)
    message = _untried(fl, f"{hold.error_code}: {hold.reason}", now)
    message["status"] = events.DEFERRED
    data = {
        "error_code": hold.error_code,
        "reason": hold.reason,
        "next_attempt_at": hold.until.isoformat(),
    }
    rows.events.append(event_row(fl, events.DEFERRED, now, data))
    rows.rescheduled.append(
        {
            "message_id": claimed.message_id,
            "next_attempt_at": hold.until,
            "attempts": claimed.attempts,
            "pool_id": claimed.pool_id,
        }
    )
    rows.messages.append(message)


def add_dropped(rows: Rows, fl: InFlight, reason: str, now: datetime) -> None:
    """The message will never be sent (no attempt): final."""
    add_lost(rows, fl, now)
    message = _untried(fl, reason, now)
    message["status"] = events.DROPPED
    rows.events.append(event_row(fl, events.DROPPED, now, {"reason": reason}))
    rows.finished.append(fl.claimed.message_id)
    rows.messages.append(message)


def _untried(fl: InFlight, reply: str, now: datetime) -> dict[str, Any]:
    """The message row's changes when no send was tried."""
    message: dict[str, Any] = {"id": fl.claimed.message_id, "last_reply": reply, "updated_at": now}
    message["attempts"] = fl.claimed.attempts  # (more than recorded when a lease was lost)
    if fl.route_note:
        message["route_note"] = fl.route_note
    return message


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
