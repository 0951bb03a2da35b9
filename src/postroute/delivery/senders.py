"""Per-pool senders: up to ``max_connections`` tasks, each owning one reused SMTP session.

A task takes the next job from the pool's queue, checks that the pool is still usable
(circuit breaker), waits its turn under the rate limits, opens its session if needed
(with Redis, first taking one of the pool's shared connection slots; RSET before every
reuse), sends, and reports the outcome. It closes its session after ``idle_seconds``
without work. Connection, TLS and AUTH failures become ``RelayDown`` outcomes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from postroute.delivery.limits import ConnectionSlots
from postroute.delivery.pacing import Pacer
from postroute.kit.clock import Clock
from postroute.relay import transport
from postroute.relay.config import ClientOptions, RelayConfig
from postroute.relay.results import Outcome, RelayDown
from postroute.relay.session import RelayError, RelaySession, open_session

log = logging.getLogger("postroute.delivery")
SLOT_POLL = 0.05
POOL_DOWN = "pool_down"
INTERNAL = "internal_error"


@dataclass
class Job:
    message_id: str
    pool_id: str
    sender: str
    recipient: str
    data: bytes
    reserved: bool = False  # a daily-limit slot was reserved for this send


@dataclass(frozen=True)
class Report:
    job: Job
    outcome: Outcome
    started_at: datetime
    finished_at: datetime


ReportFn = Callable[[Report], None]
Gate = Callable[[str], str | None]  # pool id -> why it must not be used now, or None


@dataclass(frozen=True)
class SenderDeps:
    options: ClientOptions
    clock: Clock
    report: ReportFn
    gate: Gate
    pacer: Pacer
    slots: ConnectionSlots
    idle_seconds: float


class PoolSender:
    def __init__(
        self, pool_id: str, relay: RelayConfig, max_connections: int, deps: SenderDeps
    ) -> None:
        self.pool_id = pool_id
        self.relay = relay
        self.max_connections = max_connections
        self._deps = deps
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = 0
        self._generation = 0  # bumped when the relay settings change: old sessions close

    def configure(self, relay: RelayConfig, max_connections: int) -> None:
        if relay != self.relay:
            self.relay = relay
            self._generation += 1
        self.max_connections = max_connections

    def submit(self, job: Job) -> None:
        self._queue.put_nowait(job)
        if self._idle < self._queue.qsize() and len(self._tasks) < self.max_connections:
            task = asyncio.create_task(self._run(), name=f"sender-{self.pool_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def take_pending(self) -> list[Job]:
        """Jobs not yet started (shutdown hands them back to the queue)."""
        jobs = []
        while not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _report(self, job: Job, outcome: Outcome, started: datetime) -> None:
        self._deps.report(Report(job, outcome, started, self._deps.clock.now()))

    async def _next_job(self) -> Job | None:
        if not self._queue.empty():  # busy: no idle timer (wait_for) per job
            return self._queue.get_nowait()
        self._idle += 1
        try:
            async with asyncio.timeout(self._deps.idle_seconds):  # no wrapper task, as
                return await self._queue.get()  # wait_for makes one in 3.11
        except TimeoutError:
            return None
        finally:
            self._idle -= 1

    async def _run(self) -> None:
        deps = self._deps
        smtp: RelaySession | None = None
        holder: str | None = None
        generation = self._generation
        try:
            while (job := await self._next_job()) is not None:
                try:
                    smtp, holder, generation = await self._handle(job, smtp, holder, generation)
                except Exception as exc:  # never lose a job: report it, drop the session
                    log.exception("sending %s through pool %s failed", job.message_id, self.pool_id)
                    detail = f"internal error: {type(exc).__name__}"
                    self._report(job, RelayDown(INTERNAL, detail), deps.clock.now())
                    smtp = None  # closed by _handle
        finally:
            if smtp is not None:
                await asyncio.shield(transport.close(smtp))
            if holder is not None:
                await asyncio.shield(deps.slots.release(self.pool_id, holder))

    async def _handle(
        self, job: Job, smtp: RelaySession | None, holder: str | None, generation: int
    ) -> tuple[RelaySession | None, str | None, int]:
        """One job on this task's session; returns the session state to keep."""
        deps = self._deps
        try:
            started = deps.clock.now()
            reason = deps.gate(self.pool_id)
            if reason is not None:
                self._report(job, RelayDown(POOL_DOWN, reason), started)
                return smtp, holder, generation
            if smtp is not None and generation != self._generation:
                await transport.close(smtp)
                smtp = None
            reused = smtp is not None
            if smtp is None:
                smtp, holder, generation = await self._open(job, holder, started)
                if smtp is None:
                    return None, holder, generation
            slots = await deps.pacer.turn(self.pool_id)
            try:
                outcome = await transport.send_message(
                    smtp, job.sender, job.recipient, job.data, reset=reused
                )
                if isinstance(outcome, transport.Stale):  # the relay closed it: once more
                    await transport.close(smtp)
                    smtp, holder, generation = await self._open(job, holder, started)
                    if smtp is None:
                        return None, holder, generation
                    outcome = await transport.send_message(
                        smtp, job.sender, job.recipient, job.data
                    )
            finally:
                await deps.pacer.done(slots)
            if not transport.session_usable(outcome):
                await transport.close(smtp)
                smtp = None
            elif holder is not None:
                await deps.slots.refresh(self.pool_id, holder)
            self._report(job, outcome, started)
            return smtp, holder, generation
        except BaseException:
            if smtp is not None:  # a session opened here must not leak
                await asyncio.shield(transport.close(smtp))
            raise

    async def _open(
        self, job: Job, holder: str | None, started: datetime
    ) -> tuple[RelaySession | None, str | None, int]:
        """A new session (with Redis, first a shared connection slot); a failure to open
        one is reported as the job's outcome (None)."""
        if holder is None:
            holder = await self._connection_slot()
        generation = self._generation
        try:
            return await open_session(self.relay, self._deps.options), holder, generation
        except RelayError as exc:
            self._report(job, RelayDown(exc.code, exc.detail, exc.smtp_code), started)
            return None, holder, generation

    async def _connection_slot(self) -> str:
        while True:
            holder = await self._deps.slots.acquire(self.pool_id, self.max_connections)
            if holder is not None:
                return holder
            await asyncio.sleep(SLOT_POLL)
