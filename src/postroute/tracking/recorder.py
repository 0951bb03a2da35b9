"""Hits into the database, in the background: the journal's segments drained in batches.

Every ``DRAIN_SECONDS`` a round seals the segment being written (:meth:`Journal.seal`),
reads the segments it holds, and writes the hits that are *ripe* in batches of up to
``BATCH`` (one ``Changes`` each, through the runtime's store); a segment is unlinked
once all of its hits are written. A click is ripe once every hit of the next
``ALL_LINKS_SECONDS`` has been read (the all-links rule looks at the clicks around it);
opens are ripe at once. Segments left by a process that died are claimed at start and
every ``LEFTOVER_SECONDS`` after. A failed write leaves everything in place and is tried
again, later and later (up to ``RETRY_MAX_SECONDS``); the hits stay on disk meanwhile,
and the current segment grows once ``MAX_BACKLOG`` segments wait. A batch the database
refuses whole (a constraint: its message was deleted meanwhile) is written one hit at a
time, and a hit refused alone is logged and dropped, so that it cannot hold up the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.exc import DataError, IntegrityError

from postroute.runtime import Runtime
from postroute.tracking import drain, machine
from postroute.tracking.hits import CLICK, BadLine, Hit, decode
from postroute.tracking.journal import Journal, Segment, claim_leftovers, read_lines

log = logging.getLogger("postroute.tracking")

DRAIN_SECONDS = 0.2
BATCH = 2_000  # hits per write
READ_AHEAD = 50_000  # hits read and not yet written, at most
READ_CHUNK = 10_000  # lines per read
MAX_BACKLOG = 16  # segments held at once
LEFTOVER_SECONDS = 30.0
RETRY_MAX_SECONDS = 30.0
STOP_SECONDS = 20.0  # a stopping recorder's last drain; what is left waits in the journal


@dataclass(eq=False)
class _Source:
    segment: Segment
    offset: int = 0
    eof: bool = False
    outstanding: int = 0  # hits read and not yet written
    check: bool = False  # some of its hits may be stored already: skip those
    last_at: datetime | None = None  # of the last hit read


class Recorder:
    def __init__(self, runtime: Runtime, directory: Path) -> None:
        self.runtime = runtime
        self.directory = directory
        self.journal = Journal(directory, runtime.clock)
        self.recorded = 0  # events written by this recorder
        self._sources: list[_Source] = []
        self._pending: list[tuple[Hit, _Source]] = []
        self._horizon: datetime | None = None  # every hit of ours before it is read
        self._round = asyncio.Lock()
        self._next_scan = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        """Drain in the background from now on (leftovers of dead processes first)."""
        self._stop.clear()
        await asyncio.to_thread(machine.warm)  # not in the first drain, on the event loop
        self._task = asyncio.create_task(self._run(), name="tracking-recorder")

    async def stop(self) -> None:
        """Finish the round under way and drain what is left, within ``STOP_SECONDS``;
        let go of the segments not drained (the next start drains them)."""
        self._stop.set()
        try:
            async with asyncio.timeout(STOP_SECONDS):
                if self._task is not None:
                    await self._task
                await self.drain(final=True)
        except Exception as exc:  # the database is down, or slow: nothing is lost
            log.warning("tracking: hits left in %s for the next start (%s)", self.directory,
                        type(exc).__name__)  # fmt: skip
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
            await self.journal.close()
            if (segment := await self.journal.seal()) is not None:
                segment.release()
            for source in self._sources:
                source.segment.release()
            self._sources, self._pending = [], []

    async def _run(self) -> None:
        delay = DRAIN_SECONDS
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            try:
                await self.drain()
                delay = DRAIN_SECONDS
            except Exception as exc:
                delay = min(max(delay * 2, 1.0), RETRY_MAX_SECONDS)
                log.warning("tracking: draining hits failed (%s: %s); again in %g s",
                            type(exc).__name__, exc, delay)  # fmt: skip

    async def drain(self, *, final: bool = False) -> int:
        """One round; ``final``: this process takes no more hits, so every hit is ripe
        and everything is drained. The number of events written."""
        async with self._round:
            if final or time.monotonic() >= self._next_scan:
                self._claim_leftovers()
            if final or len(self._sources) < MAX_BACKLOG:
                await self._seal()
            before = self.recorded
            while True:
                more = await self._read()
                progress = await self._write_ripe(final)
                if not more or not progress:  # all read, or waiting for the clock
                    return self.recorded - before

    def _claim_leftovers(self) -> None:
        self._next_scan = time.monotonic() + LEFTOVER_SECONDS
        room = MAX_BACKLOG - len(self._sources)
        for segment in claim_leftovers(self.directory, max(room, 0)):
            log.info("tracking: draining %s, left by a process that stopped", segment.path.name)
            self._sources.append(_Source(segment, check=True))

    async def _seal(self) -> None:
        before = self.runtime.clock.now()
        segment = await self.journal.seal()
        if segment is not None:
            self._sources.append(_Source(segment))
        if self.journal.pending() == 0:  # every hit made before `before` was sealed
            self._advance(before)
        elif segment is not None and segment.horizon is not None:
            self._advance(segment.horizon)

    def _advance(self, horizon: datetime) -> None:
        """Never back: a clock set back would hold clicks until it caught up."""
        if self._horizon is None or horizon > self._horizon:
            self._horizon = horizon

    async def _read(self) -> bool:
        """Read segments into the pending hits, oldest first, up to ``READ_AHEAD``
        (in a thread: a large leftover takes a while); whether some have more."""
        for source in self._sources:
            while not source.eof:
                room = min(READ_AHEAD - len(self._pending), READ_CHUNK)
                if room <= 0:
                    return True
                path = source.segment.path
                hits, bad, source.offset, source.eof = await asyncio.to_thread(
                    _load, path, source.offset, room
                )
                if bad:
                    log.warning("tracking: %s: %d lines that are not hits", path.name, bad)
                self._pending += [(hit, source) for hit in hits]
                source.outstanding += len(hits)
                if hits:
                    source.last_at = hits[-1].at
        self._finish_sources()
        return False

    def _ripe_before(self, final: bool) -> datetime | None:
        """Clicks before this are ripe (None: all are)."""
        if final:
            return None
        bounds = [s.last_at for s in self._sources if not s.eof and s.last_at is not None]
        if self._horizon is not None:
            bounds.append(self._horizon)
        if not bounds:
            return datetime.min.replace(tzinfo=self.runtime.clock.now().tzinfo)
        return min(bounds) - timedelta(seconds=machine.ALL_LINKS_SECONDS)

    async def _write_ripe(self, final: bool) -> int:
        """Write the ripe pending hits; how many were taken (written or skipped)."""
        limit = self._ripe_before(final)
        ripe = [p for p in self._pending if _ripe(p[0], p[1], limit)]
        ripe.sort(key=lambda p: p[0].at)
        clicks: dict[str, list[Hit]] = {}  # message id -> its pending clicks, read once
        for hit, _ in self._pending:
            if hit.kind == CLICK:
                clicks.setdefault(hit.message_id, []).append(hit)
        written: set[int] = set()
        try:
            for start in range(0, len(ripe), BATCH):
                batch = ripe[start : start + BATCH]
                ids = {id(hit) for hit, _ in batch}
                clicked = {h.message_id for h, _ in batch if h.kind == CLICK}
                later = [
                    h
                    for message_id in clicked
                    for h in clicks[message_id]
                    if id(h) not in ids and id(h) not in written
                ]
                check = any(source.check for _, source in batch)
                await self._write([h for h, _ in batch], later, check)
                written |= ids
                for _, source in batch:
                    source.outstanding -= 1
                self._finish_sources()
        finally:  # the batches written leave the pending hits (once, not per batch)
            self._pending = [p for p in self._pending if id(p[0]) not in written]
        return len(ripe)

    async def _write(self, hits: list[Hit], later: list[Hit], check: bool) -> None:
        planned = await drain.plan(self.runtime, hits, later, check=check)
        if not planned.changes:
            return
        try:
            await self.runtime.store.write(planned.changes)
        except (IntegrityError, DataError) as exc:  # refused whole: one hit at a time
            if len(hits) > 1:
                for hit in hits:
                    others = [h for h in hits if h is not hit and h.kind == CLICK]
                    await self._write([hit], [*later, *others], check)
                return
            log.error("tracking: %s %s of message %s cannot be recorded (%s): dropped",
                      hits[0].kind, hits[0].id, hits[0].message_id, type(exc).__name__)  # fmt: skip
            return
        except BaseException:  # written or not: check what is pending next time
            for source in self._sources:
                source.check = True
            raise
        self.recorded += planned.recorded

    def _finish_sources(self) -> None:
        """Unlink the segments read to the end whose every hit is written."""
        done = [s for s in self._sources if s.eof and s.outstanding == 0]
        for source in done:
            source.segment.remove()
        if done:
            self._sources = [s for s in self._sources if not (s.eof and s.outstanding == 0)]


def _load(path: Path, offset: int, limit: int) -> tuple[list[Hit], int, int, bool]:
    """Hits of ``path`` from ``offset``: the hits, lines that were not, where the next
    read starts, and whether the file ends there."""
    lines, offset, eof = read_lines(path, offset, limit)
    hits: list[Hit] = []
    for line in lines:
        with contextlib.suppress(BadLine):
            hits.append(decode(line))
    return hits, len(lines) - len(hits), offset, eof


def _ripe(hit: Hit, source: _Source, limit: datetime | None) -> bool:
    """Opens at once; clicks once the clicks around them are known: before ``limit``,
    or read to the end of a dead process's segment (nothing follows them there)."""
    if hit.kind != CLICK or limit is None or hit.at <= limit:
        return True
    return source.eof and source.segment.horizon is None
