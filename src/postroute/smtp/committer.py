"""Group commit for the DATA hook: messages that finish arriving while a transaction is
being committed are stored together in the next one (one write of the store).

Every session still gets its 250 only after the commit that holds its message is on
disk. Alone, a message is stored at once (no waiting for company); under load the cost
of a commit (an fsync, the statements) is shared by the batch, and one process never
has two write transactions of its own competing for SQLite's lock. A batch is taken
once its transaction has begun (on SQLite: holds the write lock, in the writer's
thread), so the messages that arrive while another process (the worker) holds the lock
are stored in that same transaction rather than in one more. A write whose guard fails
(an account's pools changed since its messages were planned) writes nothing: its
items are planned again (:data:`Replan`), the refused ones get their error, the rest
go into the next commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from postroute import errors
from postroute.db.changes import Stale
from postroute.db.store import Prepared, Store

log = logging.getLogger("postroute.smtp")

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")
# Items whose write was stale, planned again: each a new item, or the error refusing it.
Replan = Callable[[Sequence[I]], Awaitable[Sequence[I | errors.DomainError]]]

MAX_BATCH = 100  # messages per transaction
MAX_BATCH_BYTES = 16 * 1024 * 1024  # and message bytes per transaction (a bigger one alone)


@dataclass
class _Pending(Generic[I, R]):
    item: I
    size: int
    future: asyncio.Future[R]


class Committer(Generic[I, R]):
    def __init__(
        self,
        store: Callable[[], Store],
        write: Callable[[I], Prepared],
        answer: Callable[[I], R],
        replan: Replan[I],
    ) -> None:
        self._store = store  # asked per batch: the runtime's current store
        self._write = write  # an item's rows, prepared for the store
        self._answer = answer  # an item's result once stored
        self._replan = replan
        self._queue: deque[_Pending[I, R]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._syncing: set[asyncio.Future[None]] = set()  # committed batches awaiting fsync

    async def run(self, item: I, size: int) -> R:
        """``item``'s result once the transaction storing it is on disk; its DomainError
        if it was refused. Any other failure of a write is raised for each item of its
        batch (nothing of it was stored). A caller cancelled before its batch starts is
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
        """One write. If this task is cancelled meanwhile, a write that has not taken its
        batch yet takes nothing, and one that has is waited for: its sessions get what
        became of their messages (a 250 only for a stored message), then the
        cancellation goes on."""
        store = self._store()
        taken: list[_Pending[I, R]] = []
        cancelled = threading.Event()

        def build() -> list[Prepared]:  # in the transaction, the write lock held
            if cancelled.is_set():
                return []
            taken.extend(self._take())
            return [self._write(p.item) for p in taken]

        write = asyncio.ensure_future(store.commit(build))
        try:
            await asyncio.wait([write])
        except asyncio.CancelledError:
            cancelled.set()
            await asyncio.wait([write])
            await self._conclude(store, write, taken, stopping=True)
            raise
        await self._conclude(store, write, taken)

    async def _conclude(
        self,
        store: Store,
        write: asyncio.Future[int | None],
        taken: list[_Pending[I, R]],
        *,
        stopping: bool = False,
    ) -> None:
        """Hand out a finished write's outcome. A commit's sessions are answered once it
        is on disk, by a task of its own: the next batch need not wait for the disk."""
        error = write.exception()
        if isinstance(error, Stale) and stopping:
            self._fail(taken, asyncio.CancelledError())
        elif isinstance(error, Stale):
            await self._again(taken)
        elif error is not None:  # nothing stored; failed to begin: those it would take
            self._fail(taken or self._take(), error)
        elif taken:
            ticket = write.result()
            task = asyncio.ensure_future(self._answer_after(store, ticket, taken))
            self._syncing.add(task)
            task.add_done_callback(self._syncing.discard)

    async def _again(self, taken: list[_Pending[I, R]]) -> None:
        """A stale write: plan its items again; the refused are answered, the rest go
        first into the next commit."""
        try:
            fresh = await self._replan([p.item for p in taken])
        except Exception as exc:
            self._fail(taken, exc)
            return
        for pending, item in reversed(list(zip(taken, fresh, strict=True))):
            if isinstance(item, errors.DomainError):
                if not pending.future.done():
                    pending.future.set_exception(item)
            else:
                pending.item = item
                self._queue.appendleft(pending)

    async def _answer_after(
        self, store: Store, ticket: int | None, batch: list[_Pending[I, R]]
    ) -> None:
        try:
            if ticket is not None:
                await store.sync(ticket)
        except BaseException as exc:  # committed, but not known to be on disk: no 250
            self._fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for pending in batch:
            if pending.future.done():
                continue
            try:
                pending.future.set_result(self._answer(pending.item))
            except Exception as exc:  # a bug: no session is left without an answer
                log.exception("SMTP group commit: handing out a result failed")
                pending.future.set_exception(exc)

    @staticmethod
    def _fail(batch: Sequence[_Pending[I, R]], exc: BaseException) -> None:
        for pending in batch:
            if pending.future.done():
                continue
            if isinstance(exc, Exception):
                pending.future.set_exception(exc)
            else:
                pending.future.cancel()
