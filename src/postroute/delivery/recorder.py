"""Turn relay reports into rows: attempts, events, message status, queue changes, usage.

Reports are written in batches, one transaction each, so the database sees a few large
writes instead of many small ones. Only rows this worker still leases are written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from postroute import events
from postroute.delivery import repository as repo
from postroute.delivery.repository import Claimed
from postroute.delivery.results import Bounced, Deferred, RelayDown, Sent, reply_line
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.senders import Report
from postroute.kit import ids
from postroute.pools import repository as pools_repo


@dataclass(frozen=True)
class Done:
    claimed: Claimed
    report: Report


@dataclass
class Rows:
    messages: list[dict[str, Any]]
    events: list[dict[str, Any]]
    attempts: list[dict[str, Any]]
    finished: list[str]
    rescheduled: list[dict[str, Any]]
    sent_per_pool: Counter[str]


def build_rows(done: Sequence[Done], policy: RetryPolicy) -> Rows:
    rows = Rows([], [], [], [], [], Counter())
    for item in done:
        _add(rows, item, policy)
    return rows


def _event(item: Done, kind: str, when: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": ids.new_id(ids.EVENT),
        "account_id": item.claimed.account_id,
        "message_id": item.claimed.message_id,
        "type": kind,
        "created_at": when,
        "data": data,
    }


def _add(rows: Rows, item: Done, policy: RetryPolicy) -> None:
    report, claimed = item.report, item.claimed
    outcome, pool_id = report.outcome, report.job.pool_id
    attempt = claimed.attempts + 1
    now = report.finished_at
    reply = reply_line(outcome)
    code = outcome.smtp_code if isinstance(outcome, RelayDown) else outcome.code
    rows.attempts.append(
        {
            "id": ids.new_id(ids.ATTEMPT),
            "account_id": claimed.account_id,
            "message_id": claimed.message_id,
            "number": attempt,
            "pool_id": pool_id,
            "outcome": _kind(outcome),
            "reply_code": code,
            "reply_text": outcome.detail if isinstance(outcome, RelayDown) else outcome.text,
            "error_code": outcome.error_code if isinstance(outcome, RelayDown) else None,
            "started_at": report.started_at,
            "finished_at": now,
        }
    )
    if claimed.attempts == 0:
        rows.events.append(_event(item, events.PROCESSED, report.started_at, {"pool_id": pool_id}))
    message: dict[str, Any] = {
        "id": claimed.message_id,
        "attempts": attempt,
        "last_reply": reply,
        "pool_id": pool_id,
        "updated_at": now,
    }
    base = {"pool_id": pool_id, "attempt": attempt, "reply": reply}
    if isinstance(outcome, Sent):
        message.update(status=events.SENT, relay_queue_id=outcome.queue_id)
        rows.events.append(_event(item, events.SENT, now, {**base, "queue_id": outcome.queue_id}))
        rows.finished.append(claimed.message_id)
        rows.sent_per_pool[pool_id] += 1
    elif isinstance(outcome, Bounced):
        message.update(status=events.BOUNCED)
        rows.events.append(_event(item, events.BOUNCED, now, {**base, "type": "hard"}))
        rows.finished.append(claimed.message_id)
    else:
        retry_at = policy.next_attempt(attempt, now)
        if retry_at is None:
            message.update(status=events.DROPPED)
            data = {**base, "reason": f"gave up after {attempt} attempts"}
            rows.events.append(_event(item, events.DROPPED, now, data))
            rows.finished.append(claimed.message_id)
        else:
            message.update(status=events.DEFERRED)
            data = {**base, "next_attempt_at": retry_at.isoformat()}
            if isinstance(outcome, RelayDown):
                data["error_code"] = outcome.error_code
            rows.events.append(_event(item, events.DEFERRED, now, data))
            rows.rescheduled.append(
                {
                    "message_id": claimed.message_id,
                    "next_attempt_at": retry_at,
                    "attempts": attempt,
                    "pool_id": pool_id,
                }
            )
    rows.messages.append(message)


def _kind(outcome: Sent | Deferred | Bounced | RelayDown) -> str:
    if isinstance(outcome, Sent):
        return "sent"
    if isinstance(outcome, Bounced):
        return "bounced"
    if isinstance(outcome, Deferred):
        return "deferred"
    return "relay_down"


async def write(
    session: AsyncSession, owner: str, done: Sequence[Done], policy: RetryPolicy
) -> list[Done]:
    """Write what this worker still owns; returns the items written."""
    owned = await repo.still_leased(session, owner, [d.claimed.message_id for d in done])
    mine = [d for d in done if d.claimed.message_id in owned]
    rows = build_rows(mine, policy)
    await repo.add_attempts(session, rows.attempts)
    await repo.add_events(session, rows.events)
    await repo.update_messages(session, rows.messages)
    await repo.finish(session, rows.finished)
    await repo.reschedule(session, rows.rescheduled)
    for pool_id, count in rows.sent_per_pool.items():
        day = next(d.report.finished_at.date() for d in mine if d.report.job.pool_id == pool_id)
        await pools_repo.add_usage(session, pool_id, day, sent=count)
    return mine
