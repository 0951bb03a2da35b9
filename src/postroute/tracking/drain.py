"""One drained batch of hits as one write: read what the rules need, classify, record.

For the batch's messages it reads their account (a hit for a message that is gone is
dropped), their `sent` time, the `opened`/`clicked` events stored around the batch's
hits (hits stored already are skipped: a drain run again after a crash counts nothing
twice; stored clicks join the all-links rule) and which of them have had their first
human open and click. Then each hit gets its machine reason (:mod:`.machine`) and the
first human open and click of a message get ``first: true``, in the order of the hits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from postroute.db import begin_read
from postroute.db.changes import Changes
from postroute.events import names
from postroute.events.record import Event, record
from postroute.runtime import Runtime
from postroute.tracking import machine, repository
from postroute.tracking.hits import CLICK, OPEN, Hit

log = logging.getLogger("postroute.tracking")

TYPES = {OPEN: names.OPENED, CLICK: names.CLICKED}


@dataclass
class Planned:
    changes: Changes = field(default_factory=Changes)
    recorded: int = 0
    duplicates: int = 0  # stored by an earlier drain of the same hits
    unknown: int = 0  # for a message that does not exist (any more)


async def plan(runtime: Runtime, batch: Sequence[Hit], later: Sequence[Hit] = ()) -> Planned:
    """The write of ``batch``; ``later``: hits not drained yet that the all-links rule
    sees too (clicks of the next moments)."""
    out = Planned()
    if not batch:
        return out
    message_ids = {h.message_id for h in batch}
    window = timedelta(seconds=machine.ALL_LINKS_SECONDS)
    since = min(h.at for h in batch) - window
    until = max(h.at for h in batch) + window
    async with runtime.sessions() as session:
        await begin_read(session)
        accounts = await repository.accounts_of(session, message_ids)
        sent = await repository.sent_times(session, accounts)
        stored = await repository.engagement_between(session, accounts, since, until)
        firsts = await repository.firsts(session, accounts)
    stored_ids = {s.data.get("hit_id") for s in stored}
    fresh: list[Hit] = []
    seen: set[str] = set()
    for hit in batch:
        if hit.id in stored_ids or hit.id in seen:
            out.duplicates += 1
        elif hit.message_id not in accounts:
            out.unknown += 1
            log.debug("tracking: %s %s of message %s, which is gone", hit.kind, hit.id,
                      hit.message_id)  # fmt: skip
        else:
            fresh.append(hit)
        seen.add(hit.id)
    in_burst = machine.bursts(_clicks(stored, [*fresh, *later]))
    events: list[Event] = []
    for hit in sorted(fresh, key=lambda h: (h.at, h.id)):
        context = machine.Context(sent.get(hit.message_id), hit.id in in_burst)
        reason = machine.reason(hit, context)
        kind = TYPES[hit.kind]
        first = reason is None and (hit.message_id, kind) not in firsts
        if first:
            firsts.add((hit.message_id, kind))
        data = _data(hit, reason, first)
        events.append(Event(kind, accounts[hit.message_id], hit.message_id, hit.at, data))
    record(out.changes, events)
    out.recorded = len(events)
    return out


def _clicks(stored: Sequence[repository.Stored], hits: Sequence[Hit]) -> list[machine.Click]:
    clicks = [
        machine.Click(str(s.data.get("hit_id") or f"stored-{i}"), s.message_id, s.at, index)
        for i, s in enumerate(stored)
        if s.type == names.CLICKED and isinstance(index := s.data.get("link_index"), int)
    ]
    clicks += [
        machine.Click(h.id, h.message_id, h.at, h.link_index)
        for h in hits
        if h.kind == CLICK and h.link_index is not None
    ]
    return clicks


def _data(hit: Hit, reason: str | None, first: bool) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if hit.kind == CLICK:
        data["url"] = hit.url
        data["link_index"] = hit.link_index
    data |= {
        "machine": reason is not None,
        "machine_reason": reason,
        "first": first,
        "user_agent": hit.user_agent,
        "ip": hit.ip,
        "hit_id": hit.id,
    }
    return data
