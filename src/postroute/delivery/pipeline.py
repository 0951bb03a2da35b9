"""A claimed message's way to its relay, as named steps (as Postal's outgoing message
processor does):

    drop_if_suppressed -> choose_return_path -> choose_pool -> prepare -> send -> record

Each step passes a value on or stops with an outcome. :func:`drop_if_suppressed` drops
a message whose recipient the account suppressed after it was queued (the submit path
checked it then). :func:`choose_return_path` gives a
message from a verified domain its DKIM keys and VERP envelope sender, or drops it when
that domain's return path is not verified. :func:`choose_pool` answers the
pool that takes the message now (:class:`~postroute.delivery.dispatch.Take`), or stops
it: :class:`~postroute.delivery.dispatch.Hold` (it waits, no attempt used) or
:class:`Dropped` (it will never go). :func:`prepare` makes the bytes for that pool
(:func:`postroute.preparation.prepare`, DKIM last; after a failover only the pool
header changes, and the signatures hold).
Sending is the pool's :class:`~postroute.delivery.senders.PoolSender`, which reports
what the relay said (``Sent``, ``Deferred``, ``Bounced``, ``RelayDown``,
``UnknownOutcome``). :func:`record` turns every outcome into rows
(:mod:`postroute.delivery.outcomes`). The worker (:mod:`postroute.delivery.worker`)
runs the steps; a new rule is one more step here, in its place in the order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from postroute.delivery import outcomes
from postroute.delivery.dispatch import Budget, Hold, Take, pick
from postroute.delivery.flight import InFlight
from postroute.delivery.health import HealthBook
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.senders import Job
from postroute.domains.names import from_domain
from postroute.domains.signing import NoReturnPath, SigningBook
from postroute.models import SmtpPool
from postroute.preparation import Signing
from postroute.preparation import prepare as prepare_message
from postroute.preparation.dkim import Cache
from postroute.suppressions.rules import key as suppression_key

SUPPRESSED = "suppressed"  # a dropped event's reason (with data.suppression_reason)


@dataclass(frozen=True)
class Dropped:
    """The message will never be sent: final, without an attempt. ``data``: more for
    its ``dropped`` event."""

    reason: str
    data: Mapping[str, Any] = field(default_factory=dict)


Stop = Hold | Dropped


def drop_if_suppressed(
    flight: InFlight, suppressed: Mapping[tuple[str, str], str]
) -> Dropped | None:
    """Dropped when the account suppresses the recipient now (``suppressed``: (account,
    address key) -> reason, read for the claimed batch)."""
    e = flight.envelope
    reason = suppressed.get((e.account_id, suppression_key(e.to_email)))
    if reason is None:
        return None
    return Dropped(SUPPRESSED, {"suppression_reason": reason})


def choose_return_path(flight: InFlight, book: SigningBook) -> Signing | Dropped | None:
    """How the message leaves: signed with its domain's keys and a VERP envelope sender
    (a verified domain), as it came (None), or never (its return path is not verified).
    Also sets where its tracked URLs point (``flight.links``: the domain's tracking
    host, its unsubscribe mailto on the return-path domain)."""
    e = flight.envelope
    domain = from_domain(e.from_email)
    try:
        signing = book.signing(e.account_id, domain, e.message_id)
    except NoReturnPath as exc:
        return Dropped(str(exc))
    flight.links = book.links(e.account_id, domain)
    return signing


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


def prepare(flight: InFlight, take: Take, cache: Cache | None = None) -> Job:
    """The message as relayed through ``take``'s pool, as a job for its sender (``cache``:
    what DKIM and tracking compute once per content)."""
    if flight.prepared is None:
        out, signing, links = flight.outgoing, flight.signing, flight.links
        flight.prepared = prepare_message(out, take.pool_id, signing, cache, links)
    else:  # a failover: the same message, another pool header
        flight.prepared = flight.prepared.for_pool(take.pool_id)
    p, e = flight.prepared, flight.envelope
    return Job(e.message_id, take.pool_id, p.mail_from, e.to_email, p.data, take.reserved)


def record(
    rows: outcomes.Rows,
    flight: InFlight,
    stop: Stop | None,
    now: datetime,
    policy: RetryPolicy,
    deadline: datetime,
) -> None:
    """What became of ``flight`` as rows: a stop before any send, else its sends' reports
    (``stop`` None)."""
    if isinstance(stop, Dropped):
        outcomes.add_dropped(rows, flight, stop.reason, now, stop.data)
    elif isinstance(stop, Hold):
        outcomes.add_hold(rows, flight, stop, now)
    else:
        outcomes.add_outcome(rows, flight, policy, deadline)
