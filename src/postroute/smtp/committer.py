"""Group commit for the DATA hook: messages that finish arriving while a transaction is
being committed are stored together in the next one, in one set of bulk statements.

Every session still gets its 250 only after the commit that holds its message. Alone,
a message is stored at once (no waiting for company); under load the cost of a commit
(an fsync, round trips, statements) is shared by the batch, and one process never has
two write transactions of its own competing for SQLite's lock. A batch is taken once
its transaction has begun (on SQLite: holds the write lock), so the messages that
arrive while another process (the worker) holds the lock are stored in that same
transaction rather than in one more.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.db import SessionFactory, transaction
from postroute.sqlite_unit import Unit
from postroute.sqlite_writer import SqliteWriter

log = logging.getLogger("postroute.smtp")

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")
# Stores items in the given session; per item its result or the DomainError refusing it
# (a refused item must have written nothing).
Process = Callable[[AsyncSession, Sequence[I]], Awaitable[Sequence[R | errors.DomainError]]]

MAX_BATCH = 100  # messages per transaction
MAX_BATCH_BYTES = 16 * 1024 * 1024  # and message bytes per transaction (a bigger one alone)


@dataclass
class _Pending(Generic[I, R]):
    item: I
    size: int
    future: asyncio.Future[R]


# SQLite's one-hand-off path (optional): a batch's write transaction as a Unit, and the
# result of each item once it is committed. Called in the writer's thread.
Build = Callable[[Sequence[I]], tuple[Unit, Sequence[R]]]


class Committer(Generic[I, R]):
    def __init__(
        self,
        sessions: Callable[[], SessionFactory],
        process: Process[I, R],
        *,
        writer: Callable[[], SqliteWriter | None] = lambda: None,
        build: Build[I, R] | None = None,
    ) -> None:
        self._sessions = sessions  # asked per batch: the runtime's current factory
        self._process = process
        self._writer = writer
        self._build = build
        self._queue: deque[_Pending[I, R]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._syncing: set[asyncio.Future[None]] = set()  # committed batches awaiting fsync

    async def run(self, item: I, size: int) -> R:
        """``item``'s result once the transaction storing it is committed; its
        DomainError if it was refused. Any other failure rolls the whole batch back and
        is raised for each of its items. A caller cancelled before its batch starts is
        left out of it."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(item, size, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="smtp-group-commit")
        return await future

    async def close(self) -> None:
        """Wait for the batch being committed, if any, and its answers (at shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._syncing, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._commit()
        except asyncio.CancelledError:  # nobody is left to store what still waits
            while self._queue:
                self._queue.popleft().future.cancel()
            raise

    def _take(self) -> list[_Pending[I, R]]:
        """The next batch. Also called in the writer's thread while the event loop
        appends: deque appends and pops are atomic, and a future found not done here but
        cancelled meanwhile is skipped when the results are handed out."""
        batch: list[_Pending[I, R]] = []
        size = 0
        while self._queue and len(batch) < MAX_BATCH:
            if batch and size + self._queue[0].size > MAX_BATCH_BYTES:
                break
            pending = self._queue.popleft()
            if not pending.future.done():  # its session is gone: store nothing for it
                batch.append(pending)
                size += pending.size
        return batch

    async def _commit(self) -> None:
        """One transaction. The batch is taken once the transaction holds its connection
        (and, on SQLite, the write lock): messages that arrive while it waits for them
        join this batch instead of waiting for the next one."""
        writer = self._writer()
        batch: list[_Pending[I, R]] | None = None
        if writer is not None and self._build is not None:
            batch = await self._write(writer, self._build)
            if batch is None:
                return  # stored, or failed: its futures have their outcome
        results: Sequence[R | errors.DomainError] = ()
        try:
            async with transaction(self._sessions()) as session:
                await session.connection()  # BEGIN (IMMEDIATE on SQLite): may wait
                batch = self._take() if batch is None else batch
                if batch:
                    results = await self._process(session, [p.item for p in batch])
        except BaseException as exc:  # nothing of this batch is stored
            # its batch; when it failed to begin, the messages it would have taken
            self._fail(self._take() if batch is None else batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._settle(batch or [], results)

    async def _write(self, writer: SqliteWriter, build: Build[I, R]) -> list[_Pending[I, R]] | None:
        """The batch in one hand-off to SQLite's writer thread, taken there once the write
        lock is held. Returns the batch when the ordinary transaction must store it (a
        guard failed, or building its statements did: nothing was written), else None.

        If this task is cancelled meanwhile, a write that has not taken its batch yet takes
        nothing, and one that has is waited for: its sessions get what became of their
        messages (a 250 only for a committed message), then the cancellation goes on."""
        taken: list[_Pending[I, R]] = []
        results: list[Sequence[R]] = []
        cancelled = threading.Event()
        failed: list[Exception] = []

        def unit() -> Unit | None:  # in the writer's thread, holding the lock
            if cancelled.is_set():
                return None
            taken.extend(self._take())
            if not taken:
                return None
            try:
                built, replies = build([p.item for p in taken])
            except Exception as exc:  # a bug, not the database: the ordinary path
                failed.append(exc)
                return None
            results.append(replies)
            return built

        write = asyncio.ensure_future(writer.commit(unit))
        try:
            await asyncio.wait([write])
        except asyncio.CancelledError:
            cancelled.set()
            await asyncio.wait([write])
            if self._conclude(writer, write, taken, results):
                self._fail(taken, asyncio.CancelledError())
            raise
        if failed:
            log.error("SMTP group commit: building its statements failed: %r", failed[0])
        return taken if self._conclude(writer, write, taken, results) else None

    def _conclude(
        self,
        writer: SqliteWriter,
        write: asyncio.Future[int | None],
        taken: list[_Pending[I, R]],
        results: list[Sequence[R]],
    ) -> bool:
        """Hand out a finished write's outcome; True when ``taken`` is still to store.
        A commit's sessions are answered once it is on disk, by a task of its own: the
        next batch need not wait for the disk (the write lock is free already)."""
        error = write.exception()
        if error is not None:  # nothing stored; failed to begin: those it would take
            self._fail(taken or self._take(), error)
            return False
        ticket = write.result()
        if ticket is not None:
            task = asyncio.ensure_future(self._answer(writer, ticket, taken, results[0]))
            self._syncing.add(task)
            task.add_done_callback(self._syncing.discard)
            return False
        return bool(taken)

    async def _answer(
        self,
        writer: SqliteWriter,
        ticket: int,
        batch: list[_Pending[I, R]],
        results: Sequence[R | errors.DomainError],
    ) -> None:
        try:
            await writer.sync(ticket)
        except BaseException as exc:  # committed, but not known to be on disk: no 250
            self._fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        try:
            self._settle(batch, results)
        except Exception as exc:  # a bug: no session is left without an answer
            log.exception("SMTP group commit: handing out the results failed")
            self._fail(batch, exc)

    @staticmethod
    def _fail(batch: Sequence[_Pending[I, R]], exc: BaseException) -> None:
        for pending in batch:
            if pending.future.done():
                continue
            if isinstance(exc, Exception):
                pending.future.set_exception(exc)
            else:
                pending.future.cancel()

    @staticmethod
    def _settle(batch: Sequence[_Pending[I, R]], results: Sequence[R | errors.DomainError]) -> None:
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, errors.DomainError):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
