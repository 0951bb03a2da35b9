"""Runs the pipeline's first steps for claimed messages and the failover between pools.

For each claimed message: ``choose_pool`` (a take, or a stop: hold or drop), then
``prepare`` and the pool's sender. Each sender report comes back here: a success or a
reply about the message ends its tries; relay-level trouble (``RelayDown``) sends it
through ``choose_pool`` and ``prepare`` again, for its next candidate pool; content
sent without a reply (``UnknownOutcome``) is never failed over. A message whose tries
are over goes to ``finished`` (the worker records it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db.changes import Changes, apply
from postroute.db.engine import transaction
from postroute.delivery import outcomes, pipeline
from postroute.delivery import repository as repo
from postroute.delivery.dispatch import Budget, Hold, Take
from postroute.delivery.flight import InFlight
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
from postroute.delivery.senders import POOL_DOWN, PoolSender, Report, SenderDeps
from postroute.domains.signing import SigningBook
from postroute.models import SmtpPool
from postroute.pools import repository as pools_repo
from postroute.preparation.dkim import Cache
from postroute.relay.errors import SMTP_RATE_LIMIT
from postroute.relay.results import RelayDown, Sent, UnknownOutcome
from postroute.runtime import Runtime

log = logging.getLogger("postroute.delivery")


class Dispatcher:
    def __init__(
        self, runtime: Runtime, finished: Callable[[InFlight], None], max_age: timedelta
    ) -> None:
        self.rt = runtime
        s = runtime.settings
        self._finished = finished
        self.max_age = max_age
        self.policy = RetryPolicy(s.retry_attempts, s.retry_base_seconds)
        self.bounce_suppression = timedelta(days=s.bounce_suppression_days)
        self.directory = PoolDirectory(runtime.box)
        self.signing = SigningBook(runtime.box, runtime.settings)
        self._dkim = Cache()
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
        self.prober = Prober(runtime, self.directory, self.health)
        self.senders: dict[str, PoolSender] = {}
        self.inflight: dict[str, InFlight] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def deadline(self, flight: InFlight) -> datetime:
        """The end of the message's queue lifetime."""
        return flight.claimed.created_at + self.max_age

    def decide(
        self,
        claimed: list[repo.Claimed],
        envelopes: dict[str, repo.Envelope],
        contents: dict[str, bytes],
        suppressed: Mapping[tuple[str, str], str],
        budget: Budget,
        now: datetime,
    ) -> tuple[list[tuple[InFlight, Take]], outcomes.Rows]:
        """The steps up to ``choose_pool`` per message: the takes, and the rows of those
        stopped (``suppressed``: (account, address key) -> reason)."""
        takes: list[tuple[InFlight, Take]] = []
        stopped = self.rows()
        backlog = {pid: (s.backlog, self._rate(pid)) for pid, s in self.senders.items()}
        for item in claimed:
            envelope = envelopes[item.message_id]
            route, pools = self.directory.candidates(item.account_id, item.pool_id)
            fl = InFlight(item, envelope, contents[envelope.content_id], [p.id for p in pools])
            fl.route_note = route.note if route else None
            dropped = pipeline.drop_if_suppressed(fl, suppressed)
            if dropped is not None:
                pipeline.record(stopped, fl, dropped, now, self.policy, self.deadline(fl))
                continue
            signing = pipeline.choose_return_path(fl, self.signing)
            if isinstance(signing, pipeline.Dropped):
                pipeline.record(stopped, fl, signing, now, self.policy, self.deadline(fl))
                continue
            fl.signing = signing
            step = pipeline.choose_pool(
                fl, pools, self.health, budget, backlog, now, self.deadline(fl)
            )
            if isinstance(step, Take):
                takes.append((fl, step))
                queued, rate = backlog.get(step.pool_id, (0, None))
                backlog[step.pool_id] = (queued + 1, rate)
            else:
                pipeline.record(stopped, fl, step, now, self.policy, self.deadline(fl))
        return takes, stopped

    def rows(self) -> outcomes.Rows:
        return outcomes.Rows(bounce_suppression=self.bounce_suppression)

    def rows_of(self, batch: list[InFlight]) -> outcomes.Rows:
        """``record``: what became of messages whose tries are over, as rows."""
        rows = self.rows()
        for fl in batch:
            now = fl.reports[-1].finished_at
            if outcomes.really_tried(fl):
                pipeline.record(rows, fl, None, now, self.policy, self.deadline(fl))
                continue
            # no pool could be tried at all: wait for the earliest to come back
            pools = [self.directory.by_id[p] for p in fl.candidates if p in self.directory.by_id]
            step = pipeline.choose_pool(
                fl, pools, self.health, Budget({}), {}, now, self.deadline(fl)
            )
            if isinstance(step, Take):  # came back meanwhile: try again soon
                step = Hold(now, POOL_DOWN, "pool came back")
            pipeline.record(rows, fl, step, now, self.policy, self.deadline(fl))
        return rows

    def send(self, fl: InFlight, take: Take) -> None:
        """``prepare`` and hand the job to the pool's sender."""
        self.inflight[fl.claimed.message_id] = fl
        job = pipeline.prepare(fl, take, self._dkim)
        self._sender_for(take.pool_id).submit(job)

    def take_pending(self) -> list[str]:
        """Messages not yet started by any sender (a stopping worker hands them back)."""
        return [job.message_id for s in self.senders.values() for job in s.take_pending()]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.senders.values()))
        await self.prober.close()

    def _sender_for(self, pool_id: str) -> PoolSender:
        relay = self.directory.relay(pool_id)
        max_connections = self.directory.by_id[pool_id].max_connections
        sender = self.senders.get(pool_id)
        if sender is None:
            sender = PoolSender(pool_id, relay, max_connections, self._deps)
            self.senders[pool_id] = sender
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

    # -- reports and failover --------------------------------------------------------------

    def _on_report(self, report: Report) -> None:
        fl = self.inflight.get(report.job.message_id)
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
        self._finished(fl)

    async def _fail_over(self, fl: InFlight) -> None:
        """``choose_pool`` among the untried candidates, one at a time; ``prepare`` (the
        pool header swapped) and send through the first that takes it."""
        try:
            now = self.rt.clock.now()
            for pool_id in fl.untried():
                sender = self.senders.get(pool_id)
                backlog = {pool_id: (sender.backlog, self._rate(pool_id))} if sender else {}
                step = await _choose_one(self, fl, self.directory.by_id[pool_id], backlog, now)
                if isinstance(step, Take):
                    self.send(fl, step)
                    return
                fl.candidates.remove(pool_id)
        except Exception:
            log.exception("failover of %s failed", fl.claimed.message_id)
        self._finished(fl)


async def _choose_one(
    d: Dispatcher,
    fl: InFlight,
    pool: SmtpPool,
    backlog: dict[str, tuple[int, float | None]],
    now: datetime,
) -> Take | pipeline.Stop:
    """``choose_pool`` for a failover to ``pool``: its daily-limit slot reserved under the
    row lock when it has a limit (no transaction otherwise, unless it throttles)."""
    budget = Budget({})
    if pool.daily_limit is None:
        step = pipeline.choose_pool(fl, [pool], d.health, budget, backlog, now, d.deadline(fl))
        if budget.throttled:
            async with transaction(d.rt.sessions) as session:
                await write_budget(session, budget, now)
        return step
    async with transaction(d.rt.sessions) as session:
        used = await pools_repo.lock_usage(session, [pool.id], now.date())
        budget.left[pool.id] = pool.daily_limit - used[pool.id]
        step = pipeline.choose_pool(fl, [pool], d.health, budget, backlog, now, d.deadline(fl))
        await write_budget(session, budget, now)
    return step


async def write_budget(
    session: AsyncSession, budget: Budget, now: datetime, extra: Changes | None = None
) -> None:
    """Today's reserved daily-limit slots and throttled counts per pool (and ``extra``),
    in the caller's transaction."""
    changes = Changes()
    for pool_id, count in budget.reserved.items():
        pools_repo.add_usage(changes, pool_id, now.date(), sent=count)
    for pool_id, count in budget.throttled.items():
        pools_repo.add_usage(changes, pool_id, now.date(), throttled=count)
    if extra is not None:
        changes.extend(extra)
    await apply(session, changes)
