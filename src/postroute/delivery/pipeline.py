"""A claimed message's way to its relay, as named steps (as Postal's outgoing message
processor does):

    choose_pool -> prepare -> send -> record

Each step passes a value on or stops with an outcome. :func:`choose_pool` answers the
pool that takes the message now (:class:`~postroute.delivery.dispatch.Take`), or stops
it: :class:`~postroute.delivery.dispatch.Hold` (it waits, no attempt used) or
:class:`Dropped` (it will never go). :func:`prepare` makes the bytes for that pool
(:func:`postroute.preparation.prepare`; after a failover only the pool header changes).
Sending is the pool's :class:`~postroute.delivery.senders.PoolSender`, which reports
what the relay said (``Sent``, ``Deferred``, ``Bounced``, ``RelayDown``,
``UnknownOutcome``). :func:`record` turns every outcome into rows
(:mod:`postroute.delivery.recorder`). The worker (:mod:`postroute.delivery.worker`)
runs the steps; a new rule is one more step here, in its place in the order (a
suppression check before ``choose_pool``, say).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from postroute.delivery import recorder
from postroute.delivery.dispatch import Budget, Hold, Take, pick
from postroute.delivery.flight import InFlight
from postroute.delivery.health import HealthBook
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.senders import Job
from postroute.models import SmtpPool
from postroute.preparation import prepare as prepare_message


@dataclass(frozen=True)
class Dropped:
    """The message will never be sent: final, without an attempt."""

    reason: str


Stop = Hold | Dropped


def choose_pool(
    flight: InFlight,
    pools: list[SmtpPool],
    health: HealthBook,
    budget: Budget,
    backlog: dict[str, tuple[int, float | None]],
    now: datetime,
    deadline: datetime,
) -> Take | Stop:
    """The first of ``pools`` (the flight's candidates, in order) that is up, has daily
    budget and room in its rate backlog; else until when the message waits, or dropped
    when no pool can take it before ``deadline`` (the end of its queue lifetime)."""
    decision = pick(pools, health, budget, backlog, now)
    if isinstance(decision, Hold) and decision.until > deadline:
        reply = f"{decision.error_code}: {decision.reason}"
        return Dropped(f"no pool could take it before the queue lifetime ran out ({reply})")
    return decision


def prepare(flight: InFlight, take: Take) -> Job:
    """The message as relayed through ``take``'s pool, as a job for its sender."""
    if flight.prepared is None:
        flight.prepared = prepare_message(flight.outgoing, take.pool_id)
    else:  # a failover: the same message, another pool header
        flight.prepared = flight.prepared.for_pool(take.pool_id)
    p, e = flight.prepared, flight.envelope
    return Job(e.message_id, take.pool_id, p.mail_from, e.to_email, p.data, take.reserved)


def record(
    rows: recorder.Rows,
    flight: InFlight,
    stop: Stop | None,
    now: datetime,
    policy: RetryPolicy,
    deadline: datetime,
) -> None:
    """What became of ``flight`` as rows: a stop before any send, else its sends' reports
    (``stop`` None)."""
    if isinstance(stop, Dropped):
        recorder.add_dropped(rows, flight, stop.reason, now)
    elif isinstance(stop, Hold):
        recorder.add_hold(rows, flight, stop, now)
    else:
        recorder.add_outcome(rows, flight, policy, deadline)
