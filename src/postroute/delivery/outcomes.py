"""The ``record`` step's first half: what happened to a claimed message as rows
(attempts, events, message status, queue changes, pool usage, suppressions from hard
bounces). :mod:`postroute.delivery.recorder` writes them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from postroute import events
from postroute.delivery.dispatch import Hold
from postroute.delivery.flight import InFlight
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.senders import POOL_DOWN, Report
from postroute.events.record import Event
from postroute.kit import ids
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
from postroute.suppressions import rules as suppression_rules


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
    suppressions: list[dict[str, Any]] = field(default_factory=list)  # from hard bounces
    # how long a hard bounce suppresses its address
    bounce_suppression: timedelta = timedelta(days=90)


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
        add_bounce(rows, fl, outcome, now, base)
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


def add_bounce(
    rows: Rows, fl: InFlight, outcome: Bounced, now: datetime, base: dict[str, Any]
) -> None:
    """A relay's permanent reply: the ``bounced`` event, with the enhanced status code
    and whether it suppressed the address (a recipient-level hard bounce does, for
    ``rows.bounce_suppression``; policy and relay trouble do not)."""
    suppress = suppression_rules.suppresses(outcome.code, outcome.text)
    status = suppression_rules.enhanced_status(outcome.text)
    data = {**base, "type": "hard", "status": status, "suppressed": suppress}
    rows.events.append(event_row(fl, events.BOUNCED, now, data))
    if suppress:
        e = fl.envelope
        rows.suppressions.append(
            suppression_rules.entry(
                e.account_id,
                e.to_email,
                suppression_rules.HARD_BOUNCE,
                e.message_id,
                now,
                rows.bounce_suppression,
            )
        )


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


def add_dropped(
    rows: Rows, fl: InFlight, reason: str, now: datetime, data: Mapping[str, Any] | None = None
) -> None:
    """The message will never be sent (no attempt): final. ``data``: more for the event."""
    add_lost(rows, fl, now)
    extra = dict(data or {})
    message = _untried(fl, ": ".join([reason, *map(str, extra.values())]), now)
    message["status"] = events.DROPPED
    rows.events.append(event_row(fl, events.DROPPED, now, {"reason": reason, **extra}))
    rows.finished.append(fl.claimed.message_id)
    rows.messages.append(message)


def _untried(fl: InFlight, reply: str, now: datetime) -> dict[str, Any]:
    """The message row's changes when no send was tried."""
    message: dict[str, Any] = {"id": fl.claimed.message_id, "last_reply": reply, "updated_at": now}
    message["attempts"] = fl.claimed.attempts  # (more than recorded when a lease was lost)
    if fl.route_note:
        message["route_note"] = fl.route_note
    return message
