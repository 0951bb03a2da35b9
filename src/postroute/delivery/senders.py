"""Per-pool senders: up to ``max_connections`` tasks, each owning one reused SMTP session.

A task takes the next job from the pool's queue, opens its session if needed (RSET before
every reuse), sends, reports the outcome, and closes its session after ``idle_seconds``
without work. Connection, TLS and AUTH failures become ``RelayDown`` outcomes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiosmtplib

from postroute.delivery import transport
from postroute.delivery.results import Outcome, RelayDown
from postroute.kit.clock import Clock
from postroute.pools.relay_config import ClientOptions, RelayConfig
from postroute.pools.smtp_client import RelayError, open_session

log = logging.getLogger("postroute.delivery")


@dataclass
class Job:
    message_id: str
    pool_id: str
    sender: str
    recipient: str
    data: bytes


@dataclass(frozen=True)
class Report:
    job: Job
    outcome: Outcome
    started_at: datetime
    finished_at: datetime


ReportFn = Callable[[Report], None]


class PoolSender:
    def __init__(
        self,
        pool_id: str,
        relay: RelayConfig,
        max_connections: int,
        options: ClientOptions,
        clock: Clock,
        report: ReportFn,
        idle_seconds: float,
    ) -> None:
        self.pool_id = pool_id
        self.relay = relay
        self.max_connections = max_connections
        self._options, self._clock, self._report = options, clock, report
        self._idle_seconds = idle_seconds
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

    def take_pending(self) -> list[Job]:
        """Jobs not yet started (shutdown hands them back to the queue)."""
        jobs = []
        while not self._queue.empty():
            jobs.append(self._queue.get_nowait())
        return jobs

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        smtp: aiosmtplib.SMTP | None = None
        generation = self._generation
        try:
            while True:
                self._idle += 1
                try:
                    job = await asyncio.wait_for(self._queue.get(), self._idle_seconds)
                except TimeoutError:
                    return
                finally:
                    self._idle -= 1
                if smtp is not None and (
                    generation != self._generation or not await transport.reset(smtp)
                ):
                    await transport.close(smtp)
                    smtp = None
                started = self._clock.now()
                if smtp is None:
                    generation = self._generation
                    try:
                        smtp = await open_session(self.relay, self._options)
                    except RelayError as exc:
                        outcome: Outcome = RelayDown(exc.code, exc.detail, exc.smtp_code)
                        self._report(Report(job, outcome, started, self._clock.now()))
                        continue
                outcome = await transport.send_message(smtp, job.sender, job.recipient, job.data)
                if not transport.session_usable(outcome):
                    await transport.close(smtp)
                    smtp = None
                self._report(Report(job, outcome, started, self._clock.now()))
        finally:
            if smtp is not None:
                await asyncio.shield(transport.close(smtp))
