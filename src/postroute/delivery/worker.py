"""The delivery worker: claim due messages, pick a pool for each, send, fail over, record.

Loop: claim up to ``capacity - in flight`` rows (leases) and, in the same transaction,
load their envelopes and content, take today's daily-limit slots, and decide per
message (``dispatch.pick``): a pool's sender takes it, or it waits (pool down, daily
limit reached, rate backlog full) without using an attempt. Relay-level trouble moves
a message to its next candidate pool, unless its content went out without a reply
(``UnknownOutcome``: retried later on that pool). A recorder task writes outcomes in
batches.
``drain()`` works until nothing is due (tests); ``stop()`` stops claiming, gives back
jobs not started and lets running ones finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.api.runtime import Runtime
from postroute.db import begin_read, transaction
from postroute.delivery import recorder
from postroute.delivery import repository as repo
from postroute.delivery.dispatch import Budget, Hold, InFlight, Take, pick
from postroute.delivery.health import HealthBook
from postroute.delivery.limits import (
    LocalConnectionSlots,
    LocalRateLimiter,
    RedisConnectionSlots,
    RedisRateLimiter,
)
from postroute.delivery.pacing import Pacer, windows_for
from postroute.delivery.probes import Prober
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.routing import PoolDirectory
from postroute.delivery.senders import POOL_DOWN, Job, PoolSender, Report, SenderDeps
from postroute.messages.prepare import prepared_mime
from postroute.pools import repository as pools_repo
from postroute.relay.errors import SMTP_RATE_LIMIT
from postroute.relay.results import RelayDown, Sent, UnknownOutcome

log = logging.getLogger("postroute.delivery")
HELD = 4  # claimed messages per worker at most, in batches (being sent or to be written)


class Worker:
    def __init__(self, runtime: Runtime, *, owner: str | None = None) -> None:
        self.rt = runtime
        s = runtime.settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.policy = RetryPolicy(s.retry_attempts, s.retry_base_seconds)
        self.capacity = s.worker_batch_size
        self.lease = timedelta(seconds=s.lease_seconds)
        self.max_age = timedelta(hours=s.max_queue_hours)
        self._poll = s.worker_poll_seconds
        self._record_delay = s.worker_record_seconds
        self.directory = PoolDirectory(runtime.box)
        self.health = HealthBook(
            failures_to_open=s.breaker_failures,
            cooldown=timedelta(seconds=s.breaker_cooldown_seconds),
            recovery=timedelta(seconds=s.throttle_recovery_seconds),
        )
        redis = runtime.redis
        self._deps = SenderDeps(
            options=runtime.client_options,
            clock=runtime.clock,
            report=self._on_report,
            gate=self._gate,
            pacer=Pacer(RedisRateLimiter(redis) if redis else LocalRateLimiter(), self._windows),
            slots=RedisConnectionSlots(redis) if redis else LocalConnectionSlots(),
            idle_seconds=s.connection_idle_seconds,
        )
        self._prober = Prober(runtime, self.directory, self.health)
        self._senders: dict[str, PoolSender] = {}
        self._inflight: dict[str, InFlight] = {}
        self._finished: list[InFlight] = []
        self._recording = 0  # finished messages in the transaction being written
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._reported = asyncio.Event()
        self._stopping = False

    # -- control ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Work until ``stop()``."""
        recorder_task = asyncio.create_task(self._record_forever(), name="recorder")
        try:
            while not self._stopping:
                claimed = 0
                self._wake.clear()  # before the claim: a wake-up during it is not lost
                if self._room():
                    limit = self._free()
                    try:
                        claimed = await self._claim_and_dispatch()
                    except Exception:
                        log.exception("claiming failed; retrying")
                    if 0 < claimed < limit:  # a trickle: let more become due first (fewer,
                        # larger claims and writes; SQLite has one writer)
                        await asyncio.sleep(self._record_delay)
                if self._stopping:  # stop() came during the claim: its wake-up is spent
                    break
                if claimed == 0 or not self._room():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
        finally:
            recorder_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder_task

    async def drain(self) -> None:
        """Process everything due now (and what becomes due meanwhile), then return."""
        while True:
            claimed = await self._claim_and_dispatch()
            await self._settle()
            await self._prober.wait()
            if claimed == 0:
                return

    async def stop(self, grace: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        pending = [job.message_id for s in self._senders.values() for job in s.take_pending()]
        try:
            await self._release(pending)
            await asyncio.wait_for(self._settle(), grace)
        except TimeoutError:
            log.warning("stopping with %d messages still in flight", len(self._inflight))
        except Exception:  # e.g. a failed fsync: what is not written is left to its lease
            log.exception("stopping: recording outcomes failed")
        await self.close()
        # Released: those cut off while being sent, due at once but counted as an attempt
        # that may have been sent. A finished one keeps its lease until its outcome is
        # written: if that fails, it is sent again only once the lease expires.
        finished = {fl.claimed.message_id for fl in self._finished}
        try:
            await self._release([m for m in self._inflight if m not in finished], cut_off=True)
            await self._flush()
        except Exception:
            log.exception("stopping: outcomes not written; sent again once their leases expire")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self._senders.values()))
        await self._prober.close()

    # -- claiming and deciding -------------------------------------------------------------

    async def _claim_and_dispatch(self) -> int:
        """Lease due rows (the only step that always takes SQLite's write lock), read what
        to send without the lock, decide per message; write only when there is something
        to write (daily-limit slots, messages that must wait)."""
        now = self.rt.clock.now()
        limit = self._free()
        if limit == 0:
            return 0
        async with transaction(self.rt.sessions) as session:
            claimed = await repo.claim(session, self.owner, now, self.lease, limit)
            if not claimed:
                await self._prober.start_due(session, now)
                return 0
        try:
            takes = await self._dispatch(claimed, now)
        except Exception:  # give the leases back at once rather than at their expiry
            with contextlib.suppress(Exception):
                await self._release([c.message_id for c in claimed])
            raise
        if self._stopping:  # stop() ran meanwhile: hand these back instead of sending
            if takes:
                await self._give_back(takes, now)
            return 0
        for fl, take in takes:
            self._inflight[fl.claimed.message_id] = fl
            self._submit(fl, take.pool_id, take.reserved)
        return len(claimed)

    async def _dispatch(
        self, claimed: list[repo.Claimed], now: datetime
    ) -> list[tuple[InFlight, Take]]:
        """Read what the leased messages need, decide, write what must be written."""
        async with transaction(self.rt.sessions) as session:  # leased rows: only reads
            await begin_read(session)
            ids = [c.message_id for c in claimed]
            envelopes = await repo.load_envelopes(session, ids)
            contents = await repo.load_contents(session, {e.content_id for e in envelopes.values()})
            await self.directory.refresh(session, {c.account_id for c in claimed})
        for pool in self.directory.by_id.values():
            self.health.sync(
                pool.id, pool.health_state, pool.consecutive_failures, pool.down_until, now
            )
        limited = [p for p in self.directory.by_id.values() if p.daily_limit is not None]
        if limited:  # slots are reserved under the lock, so they are exact across workers
            async with transaction(self.rt.sessions) as session:
                used = await pools_repo.lock_usage(session, [p.id for p in limited], now.date())
                budget = Budget({p.id: (p.daily_limit or 0) - used.get(p.id, 0) for p in limited})
                takes, holds = self._decide(claimed, envelopes, contents, budget, now)
                await self._write_decisions(session, budget, holds, now)
        else:
            budget = Budget({})
            takes, holds = self._decide(claimed, envelopes, contents, budget, now)
            if holds.messages:
                async with transaction(self.rt.sessions) as session:
                    await self._write_decisions(session, budget, holds, now)
        if self._prober.due(now):  # a down pool is probed even while others are busy
            async with transaction(self.rt.sessions) as session:
                await self._prober.start_due(session, now)
        return takes

    def _decide(
        self,
        claimed: list[repo.Claimed],
        envelopes: dict[str, repo.Envelope],
        contents: dict[str, bytes],
        budget: Budget,
        now: datetime,
    ) -> tuple[list[tuple[InFlight, Take]], recorder.Rows]:
        """Per message: the pool that takes it now, or why and until when it waits."""
        takes: list[tuple[InFlight, Take]] = []
        holds = recorder.Rows()
        backlog = {pid: (s.backlog, self._rate(pid)) for pid, s in self._senders.items()}
        for item in claimed:
            envelope = envelopes[item.message_id]
            route, pools = self.directory.candidates(item.account_id, item.pool_id)
            fl = InFlight(item, envelope, contents[envelope.content_id], [p.id for p in pools])
            fl.route_note = route.note if route else None
            decision = pick(pools, self.health, budget, backlog, now)
            if isinstance(decision, Take):
                takes.append((fl, decision))
                queued, rate = backlog.get(decision.pool_id, (0, None))
                backlog[decision.pool_id] = (queued + 1, rate)
            else:
                recorder.add_hold(holds, fl, decision, now, item.created_at + self.max_age)
        return takes, holds

    async def _write_decisions(
        self, session: AsyncSession, budget: Budget, holds: recorder.Rows, now: datetime
    ) -> None:
        await _write_budget(session, budget, now)
        await recorder.write(
            session, self.owner, holds, [h["id"] for h in holds.messages], self.health
        )

    def _submit(self, fl: InFlight, pool_id: str, reserved: bool) -> None:
        data = prepared_mime(fl.envelope, fl.content, pool_id)
        e = fl.envelope
        job = Job(e.message_id, pool_id, e.from_email, e.to_email, data, reserved)
        self._sender_for(pool_id).submit(job)

    def _sender_for(self, pool_id: str) -> PoolSender:
        relay = self.directory.relay(pool_id)
        max_connections = self.directory.by_id[pool_id].max_connections
        sender = self._senders.get(pool_id)
        if sender is None:
            sender = PoolSender(pool_id, relay, max_connections, self._deps)
            self._senders[pool_id] = sender
        else:
            sender.configure(relay, max_connections)
        return sender

    def _rate(self, pool_id: str) -> float | None:
        configured = self.directory.rate(pool_id)
        effective = self.health.get(pool_id).effective_rate
        rates = [r for r in (configured, effective) if r is not None]
        return min(rates) if rates else None

    def _windows(self, pool_id: str) -> list[tuple[str, int, float]]:
        configured = self.directory.rate(pool_id)
        return windows_for(configured, self.health.get(pool_id).effective_rate, pool_id)

    def _gate(self, pool_id: str) -> str | None:
        return None if self.health.usable(pool_id) else f"pool {pool_id} is down (circuit open)"

    # -- outcomes and failover -------------------------------------------------------------

    def _on_report(self, report: Report) -> None:
        fl = self._inflight.get(report.job.message_id)
        if fl is None:
            return
        fl.reports.append(report)
        pool_id, outcome, now = report.job.pool_id, report.outcome, report.finished_at
        configured = self.directory.rate(pool_id)
        if isinstance(outcome, Sent):
            self.health.success(pool_id, now)
            self.health.recover(pool_id, configured, now)
        elif isinstance(outcome, RelayDown | UnknownOutcome):
            if outcome.error_code == SMTP_RATE_LIMIT:
                rate = self.health.throttled(pool_id, configured, now)
                log.warning("pool %s throttles us: effective rate now %.2f/s", pool_id, rate)
            elif outcome.error_code != POOL_DOWN and self.health.failure(
                pool_id, outcome.error_code, now
            ):
                log.warning(
                    "pool %s is down after repeated failures: %s", pool_id, outcome.error_code
                )
            # Content sent without a reply (UnknownOutcome): the relay may have it, so no
            # other pool gets it now; it is retried later on this one.
            if isinstance(outcome, RelayDown) and fl.untried():
                task = asyncio.create_task(self._fail_over(fl))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
        self._finish(fl)

    async def _fail_over(self, fl: InFlight) -> None:
        """Move the message to the next candidate pool that can take it now."""
        try:
            now = self.rt.clock.now()
            for pool_id in fl.untried():
                pool = self.directory.by_id[pool_id]
                backlog = (
                    {pool_id: (self._senders[pool_id].backlog, self._rate(pool_id))}
                    if pool_id in self._senders
                    else {}
                )
                budget = Budget({})
                if pool.daily_limit is None:  # nothing to reserve: no transaction
                    decision = pick([pool], self.health, budget, backlog, now)
                    if budget.throttled:
                        async with transaction(self.rt.sessions) as session:
                            await _write_budget(session, budget, now)
                else:
                    async with transaction(self.rt.sessions) as session:
                        used = await pools_repo.lock_usage(session, [pool_id], now.date())
                        budget.left[pool_id] = pool.daily_limit - used[pool_id]
                        decision = pick([pool], self.health, budget, backlog, now)
                        await _write_budget(session, budget, now)
                if isinstance(decision, Take):
                    self._submit(fl, decision.pool_id, decision.reserved)
                    return
                fl.candidates.remove(pool_id)
        except Exception:
            log.exception("failover of %s failed", fl.claimed.message_id)
        self._finish(fl)

    def _finish(self, fl: InFlight) -> None:
        had_room = self._room()
        self._finished.append(fl)
        self._reported.set()
        if not had_room and self._room():  # half the senders' work is done: claim more
            self._wake.set()  # (once, when room opens; not on every finished message)

    # -- recording -------------------------------------------------------------------------

    async def _settle(self) -> None:
        while self._inflight:
            await self._reported.wait()
            await self._flush()

    def _sending(self) -> int:
        """Claimed messages whose tries are not over (queued at a sender, or being sent)."""
        return len(self._inflight) - len(self._finished) - self._recording

    def _free(self) -> int:
        """Up to ``capacity`` messages being sent; finished ones waiting to be written do
        not count (a write waiting for SQLite's lock must not starve the senders), up to
        ``HELD`` times ``capacity`` claimed in all."""
        held = HELD * self.capacity - len(self._inflight)
        return max(min(self.capacity - self._sending(), held), 0)

    def _room(self) -> bool:
        """Claim again once half the capacity is free: fewer, larger claim transactions
        (each takes SQLite's one write lock) while the senders still have work queued."""
        return self._free() >= self.capacity - self.capacity // 2

    async def _record_forever(self) -> None:
        while True:
            await self._reported.wait()
            if len(self._finished) < self.capacity // 2:  # gather: fewer, larger writes
                await asyncio.sleep(self._record_delay)
            try:
                await self._flush()
            except Exception:
                log.exception("recording outcomes failed; retrying")
                await asyncio.sleep(1)

    async def _flush(self) -> None:
        self._reported.clear()
        if not self._finished:
            return
        batch, self._finished = self._finished, []
        self._recording += len(batch)
        rows = recorder.Rows()
        for fl in batch:
            if recorder.really_tried(fl):
                recorder.add_outcome(rows, fl, self.policy, fl.claimed.created_at + self.max_age)
            else:  # no pool could be tried at all: wait for the earliest to come back
                now = fl.reports[-1].finished_at
                pools = [
                    self.directory.by_id[p] for p in fl.candidates if p in self.directory.by_id
                ]
                hold = pick(pools, self.health, Budget({}), {}, now)
                if isinstance(hold, Take):  # came back meanwhile: try again soon
                    hold = Hold(now, POOL_DOWN, "pool came back")
                recorder.add_hold(rows, fl, hold, now, fl.claimed.created_at + self.max_age)
        try:
            written = await self._write(rows, [fl.claimed.message_id for fl in batch])
        except Exception:
            self._finished = batch + self._finished  # keep them; the leases still hold
            self._reported.set()
            raise
        finally:
            self._recording -= len(batch)
        for pool_id, when in written:  # committed: now the book may skip unchanged ones
            self.health.written(pool_id, when)
        for fl in batch:
            self._inflight.pop(fl.claimed.message_id, None)
        if self._room():
            self._wake.set()

    async def _write(self, rows: recorder.Rows, ids: list[str]) -> list[tuple[str, datetime]]:
        """Outcomes in one hand-off to SQLite's writer when it can take them, else (or when
        a lease was lost meanwhile) in an ordinary transaction."""
        writer = self.rt.writer
        if writer is not None:
            try:
                unit = recorder.unit_for(rows, self.owner, self.health, self.rt.engine.dialect)
            except Exception:  # a bug, not the database: the ordinary path still works
                log.exception("building the outcomes' statements failed")
                unit = None
            if unit is not None and await writer.write(lambda: unit):
                return []
        async with transaction(self.rt.sessions) as session:
            return await recorder.write(session, self.owner, rows, ids, self.health)

    async def _give_back(self, takes: list[tuple[InFlight, Take]], now: datetime) -> None:
        """Release messages that were taken but not sent, with their daily-limit slots."""
        unused = Counter(take.pool_id for _, take in takes if take.reserved)
        async with transaction(self.rt.sessions) as session:
            ids = [fl.claimed.message_id for fl, _ in takes]
            await repo.release(session, self.owner, ids, now)
            for pool_id, count in unused.items():
                await pools_repo.add_usage(session, pool_id, now.date(), sent=-count)

    async def _release(self, ids: list[str], *, cut_off: bool = False) -> None:
        if not ids:
            return
        async with transaction(self.rt.sessions) as session:
            await repo.release(session, self.owner, ids, self.rt.clock.now(), cut_off=cut_off)
        for message_id in ids:
            self._inflight.pop(message_id, None)


async def _write_budget(session: AsyncSession, budget: Budget, now: datetime) -> None:
    """Today's reserved daily-limit slots and throttled counts, per pool."""
    for pool_id, count in budget.reserved.items():
        await pools_repo.add_usage(session, pool_id, now.date(), sent=count)
    for pool_id, count in budget.throttled.items():
        await pools_repo.add_usage(session, pool_id, now.date(), throttled=count)
