"""The delivery worker: claim due messages, hand them to per-pool senders, record outcomes.

Loop: claim up to ``capacity - in flight`` rows (leases), load their envelopes and
content, route each to a pool's sender; a recorder task writes outcomes in batches.
``drain()`` does the same until nothing is due (tests, ``postroute send --wait``).
``stop()`` stops claiming, gives back jobs not started, lets running ones finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from datetime import timedelta

from postroute.api.runtime import Runtime
from postroute.db import transaction
from postroute.delivery import recorder
from postroute.delivery import repository as repo
from postroute.delivery.recorder import Done
from postroute.delivery.repository import Claimed
from postroute.delivery.results import RelayDown
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.routing import PoolDirectory
from postroute.delivery.senders import Job, PoolSender, Report
from postroute.errors import NO_POOL_CONFIGURED
from postroute.messages.prepare import prepared_mime

log = logging.getLogger("postroute.delivery")


class Worker:
    def __init__(self, runtime: Runtime, *, owner: str | None = None) -> None:
        self.rt = runtime
        settings = runtime.settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.policy = RetryPolicy(settings.retry_attempts, settings.retry_base_seconds)
        self.capacity = settings.worker_batch_size
        self.lease = timedelta(seconds=settings.lease_seconds)
        self._poll = settings.worker_poll_seconds
        self._directory = PoolDirectory(runtime.box)
        self._senders: dict[str, PoolSender] = {}
        self._inflight: dict[str, Claimed] = {}
        self._done: list[Done] = []
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
                if len(self._inflight) < self.capacity:
                    try:
                        claimed = await self._claim_and_dispatch()
                    except Exception:
                        log.exception("claiming failed; retrying")
                if claimed == 0 or len(self._inflight) >= self.capacity:
                    self._wake.clear()
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
            if claimed == 0:
                return

    async def stop(self, grace: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        pending = [job.message_id for s in self._senders.values() for job in s.take_pending()]
        await self._release(pending)
        try:
            await asyncio.wait_for(self._settle(), grace)
        except TimeoutError:
            log.warning("stopping with %d messages still in flight", len(self._inflight))
        await self.close()
        await self._release(list(self._inflight))
        await self._flush()

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self._senders.values()))

    # -- claiming --------------------------------------------------------------------------

    async def _claim_and_dispatch(self) -> int:
        now = self.rt.clock.now()
        limit = max(self.capacity - len(self._inflight), 0)
        if limit == 0:
            return 0
        async with transaction(self.rt.sessions) as session:
            claimed = await repo.claim(session, self.owner, now, self.lease, limit)
            if not claimed:
                return 0
            ids = [c.message_id for c in claimed]
            envelopes = await repo.load_envelopes(session, ids)
            contents = await repo.load_contents(session, {e.content_id for e in envelopes.values()})
            await self._directory.refresh(session, {c.account_id for c in claimed})
        for item in claimed:
            self._inflight[item.message_id] = item
            envelope = envelopes[item.message_id]
            route = self._directory.route(item.account_id, item.pool_id)
            if route is None:
                outcome = RelayDown(NO_POOL_CONFIGURED, "no active SMTP pool for this account")
                job = Job(item.message_id, item.pool_id or "", envelope.from_email, "", b"")
                self._on_report(Report(job, outcome, now, now))
                continue
            data = prepared_mime(envelope, contents[envelope.content_id], route.pool_id)
            job = Job(item.message_id, route.pool_id, envelope.from_email, envelope.to_email, data)
            self._sender_for(route.pool_id).submit(job)
        return len(claimed)

    def _sender_for(self, pool_id: str) -> PoolSender:
        relay, max_connections = self._directory.relay(pool_id)
        sender = self._senders.get(pool_id)
        if sender is None:
            sender = PoolSender(
                pool_id,
                relay,
                max_connections,
                self.rt.client_options,
                self.rt.clock,
                self._on_report,
                self.rt.settings.connection_idle_seconds,
            )
            self._senders[pool_id] = sender
        else:
            sender.configure(relay, max_connections)
        return sender

    # -- recording -------------------------------------------------------------------------

    def _on_report(self, report: Report) -> None:
        claimed = self._inflight.get(report.job.message_id)
        if claimed is None:
            return
        self._done.append(Done(claimed, report))
        self._reported.set()

    async def _settle(self) -> None:
        while self._inflight:
            await self._reported.wait()
            await self._flush()

    async def _record_forever(self) -> None:
        while True:
            await self._reported.wait()
            try:
                await self._flush()
            except Exception:
                log.exception("recording outcomes failed; retrying")
                await asyncio.sleep(1)

    async def _flush(self) -> None:
        self._reported.clear()
        if not self._done:
            return
        batch, self._done = self._done, []
        try:
            async with transaction(self.rt.sessions) as session:
                await recorder.write(session, self.owner, batch, self.policy)
        except Exception:
            self._done = batch + self._done  # keep them; the leases still hold
            self._reported.set()
            raise
        for item in batch:
            self._inflight.pop(item.claimed.message_id, None)
        if len(self._inflight) < self.capacity:
            self._wake.set()

    async def _release(self, ids: list[str]) -> None:
        if not ids:
            return
        async with transaction(self.rt.sessions) as session:
            await repo.release(session, self.owner, ids, self.rt.clock.now())
        for message_id in ids:
            self._inflight.pop(message_id, None)
