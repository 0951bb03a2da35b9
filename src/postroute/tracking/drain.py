"""One drained batch of hits as one write: read what the rules need, classify, record.

For the batch's messages it reads (one query) their account (a hit for a message that
is gone is dropped), their `sent` time and whether they had their first human open and
click; the clicks stored around the batch's clicks (the all-links rule); and, when some
hits may have been stored already (a segment left by a crash), the hit ids stored in
the batch's time span, to skip those: a drain run again counts nothing twice. Then each
hit gets its machine reason (:mod:`.machine`), and the first human open and click of a
message get ``first: true``, in the order of the hits.
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


async def plan(
    runtime: Runtime, batch: Sequence[Hit], later: Sequence[Hit] = (), *, check: bool = True
) -> Planned:
    """The write of ``batch``; ``later``: hits not drained yet that the all-links rule
    sees too (clicks of the next moments). ``check``: some hits may be stored already
    (a segment left by a crash, or after a write whose outcome is unknown)."""
    out = Planned()
    if not batch:
        return out
    window = timedelta(seconds=machine.ALL_LINKS_SECONDS)
    since = min(h.at for h in batch)
    until = max(h.at for h in batch)
    clicked = {h.message_id for h in batch if h.kind == CLICK}
    async with runtime.sessions() as session:
        await begin_read(session)
        known = await repository.known(session, {h.message_id for h in batch})
        stored: set[str] = set()
        if check:
            stored = await repository.hit_ids_between(session, known, since, until)
        clicks = await repository.clicks_between(
            session, clicked & known.keys(), since - window, until + window
        )
    fresh: list[Hit] = []
    seen: set[str] = set()
    for hit in batch:  # a hit stored by an earlier drain, or twice in this batch: once
        if hit.id in stored or hit.id in seen:
            continue
        seen.add(hit.id)
        if hit.message_id in known:
            fresh.append(hit)
        else:
            log.debug("tracking: %s %s of message %s, which is gone", hit.kind, hit.id,
                      hit.message_id)  # fmt: skip
    in_burst = machine.bursts(_clicks(clicks, [*fresh, *later]))
    firsts = {(m, OPEN) for m, k in known.items() if k.first_open}
    firsts |= {(m, CLICK) for m, k in known.items() if k.first_click}
    events: list[Event] = []
    for hit in sorted(fresh, key=lambda h: (h.at, h.id)):
        message = known[hit.message_id]
        reason = machine.reason(hit, machine.Context(message.sent_at, hit.id in in_burst))
        first = reason is None and (hit.message_id, hit.kind) not in firsts
        if first:
            firsts.add((hit.message_id, hit.kind))
        data = _data(hit, reason, first)
        events.append(Event(TYPES[hit.kind], message.account_id, hit.message_id, hit.at, data))
    record(out.changes, events)
    out.recorded = len(events)
    return out


def _clicks(stored: Sequence[repository.StoredClick], hits: Sequence[Hit]) -> list[machine.Click]:
    clicks = [
        machine.Click(s.hit_id or f"stored-{i}", s.message_id, s.at, s.link_index)
        for i, s in enumerate(stored)
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
