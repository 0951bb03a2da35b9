"""Turn what happened to claimed messages into rows: attempts, events, message status,
queue changes, pool usage and pool health.

Written in batches, one transaction each. Only rows this worker still leases are
written (a lease that expired and was taken over is left to its new owner).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import events
from postroute.delivery import repository as repo
from postroute.delivery.dispatch import Hold, InFlight
from postroute.delivery.health import HealthBook
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.senders import POOL_DOWN, Report
from postroute.kit import ids
from postroute.models import DeliveryAttempt, Message, MessageEvent
from postroute.models.base import table_of
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
from postroute.sqlite_unit import Unit


@dataclass
class Rows:
    messages: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    rescheduled: list[dict[str, Any]] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)  # pool -> +sent (no reservation)
    refunds: Counter[str] = field(default_factory=Counter)  # pool -> reserved, not sent
    touched: dict[str, datetime] = field(default_factory=dict)  # pools with news, and when
    succeeded: set[str] = field(default_factory=set)  # pools that took a message


def event_row(fl: InFlight, kind: str, when: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ids.new_id(ids.EVENT),
        "account_id": fl.claimed.account_id,
        "message_id": fl.claimed.message_id,
        "type": kind,
        "created_at": when,
        "data": data,
    }


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


def add_hold(rows: Rows, fl: InFlight, hold: Hold, now: datetime, max_age_until: datetime) -> None:
    """No pool can take the message now: it waits, without using an attempt."""
    claimed = fl.claimed
    add_lost(rows, fl, now)
    reply = f"{hold.error_code}: {hold.reason}"
    message: dict[str, Any] = {"id": claimed.message_id, "last_reply": reply, "updated_at": now}
    message["attempts"] = claimed.attempts  # (more than recorded when a lease was lost)
    if fl.route_note:
        message["route_note"] = fl.route_note
    if hold.until > max_age_until:
        message["status"] = events.DROPPED
        data = {"reason": f"no pool could take it before the queue lifetime ran out ({reply})"}
        rows.events.append(event_row(fl, events.DROPPED, now, data))
        rows.finished.append(claimed.message_id)
    else:
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


async def write(
    session: AsyncSession, owner: str, rows: Rows, ids_: Sequence[str], book: HealthBook
) -> list[tuple[str, datetime]]:
    """Write ``rows`` for the messages in ``ids_`` that this worker still leases. Returns
    the pools whose health row was written (for ``HealthBook.written`` after the commit)."""
    owned = await repo.still_leased(session, owner, list(ids_))
    keep = _only(rows, owned)
    await repo.add_attempts(session, keep.attempts)
    await repo.add_events(session, keep.events)
    await repo.update_messages(session, keep.messages)
    await repo.finish(session, keep.finished)
    await repo.reschedule(session, keep.rescheduled)
    for pool_id in set(keep.sent) | set(keep.refunds):
        day = rows.touched.get(pool_id)
        if day is not None:
            await pools_repo.add_usage(
                session, pool_id, day.date(), sent=keep.sent[pool_id] - keep.refunds[pool_id]
            )
    written = []
    for pool_id, when in rows.touched.items():
        if book.needs_write(pool_id, when) and await _write_health(
            session, pool_id, book, when, pool_id in rows.succeeded
        ):
            written.append((pool_id, when))
    return written


def unit_for(rows: Rows, owner: str, book: HealthBook, dialect: Dialect) -> Unit | None:
    """:func:`write` for a SQLite writer, in one hand-off: written only if this worker
    still leases every message (else nothing, and :func:`write` sorts them out). None
    when a pool's health row is due (that needs a locked read: :func:`write` does it)."""
    if any(book.needs_write(pool_id, when) for pool_id, when in rows.touched.items()):
        return None
    unit = Unit(dialect)
    repo.unit_queue_changes(unit, owner, rows.finished, rows.rescheduled)
    unit.insert(table_of(DeliveryAttempt), rows.attempts)
    unit.insert(table_of(MessageEvent), rows.events)
    unit.update(table_of(Message), "id", rows.messages)
    for pool_id in set(rows.sent) | set(rows.refunds):
        day = rows.touched.get(pool_id)
        if day is not None:
            count = rows.sent[pool_id] - rows.refunds[pool_id]
            pools_repo.unit_add_usage(unit, pool_id, day.date(), sent=count)
    return unit


def _only(rows: Rows, owned: set[str]) -> Rows:
    def mine(row: dict[str, Any], key: str) -> bool:
        return str(row[key]) in owned

    return Rows(
        messages=[r for r in rows.messages if mine(r, "id")],
        events=[r for r in rows.events if mine(r, "message_id")],
        attempts=[r for r in rows.attempts if mine(r, "message_id")],
        finished=[m for m in rows.finished if m in owned],
        rescheduled=[r for r in rows.rescheduled if mine(r, "message_id")],
        sent=rows.sent,
        refunds=rows.refunds,
        touched=rows.touched,
        succeeded=rows.succeeded,
    )


async def _write_health(
    session: AsyncSession, pool_id: str, book: HealthBook, now: datetime, succeeded: bool
) -> bool:
    pool = await pools_repo.get_pool_for_update(session, pool_id)
    if pool is None:
        return False
    h = book.get(pool_id)
    if pool.health_state == "down" and not h.down and not succeeded:
        return False  # another worker opened the circuit; only a success or a probe closes it
    pool.consecutive_failures = h.failures
    pool.effective_rate = h.effective_rate
    pool.health_last_checked_at = now
    if h.last_error is not None:
        pool.health_last_error = h.last_error
    if h.down:
        if pool.health_state != "down":
            pool.health_state, pool.down_until = "down", h.down_until
    elif h.failures or h.effective_rate is not None:
        pool.health_state, pool.down_until = "degraded", None
    else:
        pool.health_state, pool.down_until = "healthy", None
    return True
