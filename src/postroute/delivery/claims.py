"""The decision step of a claim: read what the leased messages need (their envelopes,
contents, pools, domains, and which recipients are suppressed now), run the pipeline's
first steps up to ``choose_pool`` for each (daily-limit slots reserved under a row lock, so they are
exact across workers), and write what must be written: the slots taken, and the
messages stopped before a send (held or dropped). Returns the takes to send."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db.changes import Changes, apply
from postroute.db.engine import begin_read, transaction
from postroute.delivery import outcomes, recorder
from postroute.delivery import repository as repo
from postroute.delivery.dispatch import Budget, Take
from postroute.delivery.dispatcher import Dispatcher, write_budget
from postroute.delivery.flight import InFlight
from postroute.pools import repository as pools_repo
from postroute.runtime import Runtime
from postroute.suppressions import repository as suppressions_repo
from postroute.suppressions.rules import key as suppression_key


async def decide(
    rt: Runtime, d: Dispatcher, owner: str, claimed: list[repo.Claimed], now: datetime
) -> list[tuple[InFlight, Take]]:
    """Read what the leased messages need, decide, write what must be written."""
    async with transaction(rt.sessions) as session:  # leased rows: only reads
        await begin_read(session)
        ids = [c.message_id for c in claimed]
        envelopes = await repo.load_envelopes(session, ids)
        contents = await repo.load_contents(session, {e.content_id for e in envelopes.values()})
        accounts = {c.account_id for c in claimed}
        await d.directory.refresh(session, accounts)
        await d.signing.refresh(session, accounts)
        pairs = [(e.account_id, suppression_key(e.to_email)) for e in envelopes.values()]
        suppressed = await suppressions_repo.active_pairs(session, pairs, now)
    for p in d.directory.by_id.values():
        d.health.sync(p.id, p.health_state, p.consecutive_failures, p.down_until, now)
    limited = [p for p in d.directory.by_id.values() if p.daily_limit is not None]
    budget = Budget({})
    if limited:  # slots are reserved under the lock, so they are exact across workers
        async with transaction(rt.sessions) as session:
            used = await pools_repo.lock_usage(session, [p.id for p in limited], now.date())
            budget = Budget({p.id: (p.daily_limit or 0) - used.get(p.id, 0) for p in limited})
            takes, stopped = d.decide(claimed, envelopes, contents, suppressed, budget, now)
            await _write(session, d, owner, budget, stopped, now)
    else:
        takes, stopped = d.decide(claimed, envelopes, contents, suppressed, budget, now)
        if stopped.messages:
            async with transaction(rt.sessions) as session:
                await _write(session, d, owner, budget, stopped, now)
    if d.prober.due(now):  # a down pool is probed even while others are busy
        async with transaction(rt.sessions) as session:
            await d.prober.start_due(session, now)
    return takes


async def _write(
    session: AsyncSession,
    d: Dispatcher,
    owner: str,
    budget: Budget,
    stopped: outcomes.Rows,
    now: datetime,
) -> None:
    """The budget taken and the messages stopped before a send, in the caller's
    transaction (it holds the write lock, or on PostgreSQL the leases it guards)."""
    ids = [m["id"] for m in stopped.messages]
    owned = await repo.still_leased(session, owner, ids)
    rows = recorder.only(stopped, owned)
    await write_budget(session, budget, now, recorder.changes_for(rows, owner, d.health))


async def give_back(
    rt: Runtime, owner: str, takes: list[tuple[InFlight, Take]], now: datetime
) -> None:
    """Release messages that were taken but not sent, with their daily-limit slots."""
    unused = Counter(take.pool_id for _, take in takes if take.reserved)
    changes = Changes()
    for pool_id, count in unused.items():
        pools_repo.add_usage(changes, pool_id, now.date(), sent=-count)
    async with transaction(rt.sessions) as session:
        await repo.release(session, owner, [fl.claimed.message_id for fl, _ in takes], now)
        await apply(session, changes)


async def release(rt: Runtime, owner: str, ids: list[str], *, cut_off: bool = False) -> None:
    """Give leased rows back, due at once (``cut_off``: counting an attempt that may have
    been sent, see :func:`repository.release`)."""
    async with transaction(rt.sessions) as session:
        await repo.release(session, owner, ids, rt.clock.now(), cut_off=cut_off)
