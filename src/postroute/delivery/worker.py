"""The delivery worker: the loop, the claims and the capacity; the pipeline's steps are
:mod:`postroute.delivery.pipeline`'s, run by the :class:`Dispatcher`.

Loop: claim up to ``capacity - in flight`` rows (leases), read what they need, run
``choose_pool`` for each (under a row lock of the daily counters when a pool has a daily
limit), hand the takes to the pools' senders. What became of each message comes back
through the dispatcher and is written in batches (``record``), one transaction each,
only for messages this worker still leases. ``drain()`` works until nothing is due
(tests); ``stop()`` stops claiming, gives back jobs not started and lets running ones
finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from datetime import timedelta

from postroute.db.engine import transaction
from postroute.delivery import claims, recorder
from postroute.delivery import repository as repo
from postroute.delivery.dispatcher import Dispatcher
from postroute.delivery.flight import InFlight
from postroute.domains.recheck import Rechecker
from postroute.runtime import Runtime

log = logging.getLogger("postroute.delivery")
HELD = 4  # claimed messages per worker at most, in batches (being sent or to be written)


class Worker:
    def __init__(self, runtime: Runtime, *, owner: str | None = None) -> None:
        self.rt = runtime
        s = runtime.settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.capacity = s.worker_batch_size
        self.lease = timedelta(seconds=s.lease_seconds)
        self._poll = s.worker_poll_seconds
        self._record_delay = s.worker_record_seconds
        self.dispatcher = Dispatcher(runtime, self._finish, timedelta(hours=s.max_queue_hours))
        self.health = self.dispatcher.health
        self._finished: list[InFlight] = []
        self._recording = 0  # finished messages in the transaction being written
        self._wake = asyncio.Event()
        self._reported = asyncio.Event()  # a message finished: there is something to write
        self._changed = asyncio.Event()  # finished, written or released: for _settle
        self._stopping = False

    @property
    def _inflight(self) -> dict[str, InFlight]:
        return self.dispatcher.inflight

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Work until ``stop()``."""
        recorder_task = asyncio.create_task(self._record_forever(), name="recorder")
        recheck = asyncio.create_task(Rechecker(self.rt).run(), name="domain-recheck")
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
            await Rechecker.stop(recheck)
            # Never cancelled in the middle of a write: a batch whose write was cut off
            # would be neither written nor waiting (stop() would wait out its grace, and
            # then release as "may have been sent" what was sent). It ends after its write.
            self._stopping = True
            self._reported.set()
            await recorder_task

    async def drain(self) -> None:
        """Process everything due now (and what becomes due meanwhile), then return."""
        while True:
            claimed = await self._claim_and_dispatch()
            await self._settle()
            await self.dispatcher.prober.wait()
            if claimed == 0:
                return

    async def stop(self, grace: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        pending = self.dispatcher.take_pending()
        try:
            await self._release(pending)
            await asyncio.wait_for(self._settle(), grace)
        except TimeoutError:
            log.warning("stopping with %d messages still in flight", len(self._inflight))
        except Exception:  # e.g. a failed fsync: what is not written is left to its lease
            log.exception("stopping: recording outcomes failed")
        await self.close()
        # Released: those cut off while being sent (due at once; the attempt counts). A finished
        # one keeps its lease until written: if that fails, it goes again at the lease's end.
        finished = {fl.claimed.message_id for fl in self._finished}
        try:
            await self._release([m for m in self._inflight if m not in finished], cut_off=True)
            await self._flush()
        except Exception:
            log.exception("stopping: outcomes not written; sent again once their leases expire")

    async def close(self) -> None:
        await self.dispatcher.close()

    async def _claim_and_dispatch(self) -> int:
        """Lease due rows (the only step that always takes SQLite's write lock), read what
        to send without the lock, run ``choose_pool``; write only when there is something
        to write (daily-limit slots, messages stopped before a send)."""
        now = self.rt.clock.now()
        limit = self._free()
        if limit == 0:
            return 0
        async with transaction(self.rt.sessions) as session:
            claimed = await repo.claim(session, self.owner, now, self.lease, limit)
            if not claimed:
                await self.dispatcher.prober.start_due(session, now)
                return 0
        try:
            takes = await claims.decide(self.rt, self.dispatcher, self.owner, claimed, now)
        except Exception:  # give the leases back at once rather than at their expiry
            with contextlib.suppress(Exception):
                await self._release([c.message_id for c in claimed])
            raise
        if self._stopping:  # stop() ran meanwhile: hand these back instead of sending
            if takes:
                await claims.give_back(self.rt, self.owner, takes, now)
            return 0
        for fl, take in takes:
            self.dispatcher.send(fl, take)
        return len(claimed)

    def _finish(self, fl: InFlight) -> None:
        """A message's tries are over (the dispatcher's callback): record it."""
        had_room = self._room()
        self._finished.append(fl)
        self._reported.set()
        self._changed.set()
        if not had_room and self._room():  # half the senders' work is done: claim more
            self._wake.set()  # (once, when room opens; not on every finished message)

    async def _settle(self) -> None:
        """Until every claimed message is written or released (the recorder task may be
        writing some meanwhile: each write takes its own batch)."""
        while self._inflight:
            self._changed.clear()
            if self._finished:
                await self._flush()
            elif self._inflight:
                await self._changed.wait()

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
        """Write finished messages in batches, until the worker stops (stop() writes the
        rest)."""
        while not self._stopping:
            await self._reported.wait()
            if self._stopping:
                return
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
        rows = self.dispatcher.rows_of(batch)
        try:
            written = await recorder.write(self.rt, self.owner, self.health, rows)
        except BaseException:  # (cancelled too) keep them; the leases still hold
            self._finished = batch + self._finished
            self._reported.set()
            self._changed.set()
            raise
        finally:
            self._recording -= len(batch)
        for pool_id, when in written:  # committed: now the book may skip unchanged ones
            self.health.written(pool_id, when)
        for fl in batch:
            self._inflight.pop(fl.claimed.message_id, None)
        self._changed.set()
        if self._room():
            self._wake.set()

    async def _release(self, ids: list[str], *, cut_off: bool = False) -> None:
        if not ids:
            return
        await claims.release(self.rt, self.owner, ids, cut_off=cut_off)
        for message_id in ids:
            self._inflight.pop(message_id, None)
        self._changed.set()
