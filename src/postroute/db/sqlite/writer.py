"""SQLite write transactions in one hand-off: how :class:`~postroute.db.store.Store`
writes described changes on a SQLite file.

Through SQLAlchemy's aiosqlite adaptor each statement is a round trip to aiosqlite's
thread, and each return waits its turn in a busy event loop, all while SQLite's one
write lock is held (measured in docs/performance-smtp.md: most of a group commit's
transaction was such waits). Here a whole transaction (``BEGIN IMMEDIATE``, guard
reads, its statements, ``COMMIT``) is one call in a thread of this process with a
sqlite3 connection of its own, so the lock is held for SQLite's own work: rows go in
multi-row statements (:mod:`postroute.db.sqlite.unit`, which holds what a transaction
writes), and the commit's fsync is made after the lock is released (see
:class:`SqliteWriter`).

The statements are SQLAlchemy's, compiled once for SQLite, and the rows are converted by
its bind processors (:mod:`postroute.db`), mostly before the hand-off. A guard that no
longer holds (a read that must return what the caller planned with) rolls the whole
transaction back and raises :class:`~postroute.db.changes.Stale`, as the ordinary path
does. Errors are SQLAlchemy's ``DBAPIError``, without the bound values.

PostgreSQL has no such path: its writers do not queue for one lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from postroute import db
from postroute.db.changes import Stale
from postroute.db.sqlite.unit import Unit, run_step

log = logging.getLogger("postroute.db")


class SqliteWriter:
    """A sqlite3 connection used from one thread of its own, opened on first use.

    Commits are made durable outside the write lock: the connection runs with
    ``synchronous=NORMAL`` (in WAL mode a COMMIT then only writes the WAL; SQLite itself
    still syncs around checkpoints and when the WAL starts over), and :meth:`sync` fsyncs
    the WAL file afterwards, in a thread of its own. A caller answers only after
    :meth:`sync` (:meth:`write` does both), so nothing is acknowledged before it is on
    disk, as with ``synchronous=FULL``; but the next transaction, of this process or
    another, need not wait for the disk, and one fsync covers every commit before it.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="postroute-sqlite-writer")
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="postroute-sqlite-sync")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._committed = 0  # commits made (written by the writer's thread)
        self._synced = 0  # of those, known to be on disk (written by the sync thread)
        self._wal: int | None = None  # the WAL file, open as long as the connection
        self._failed: OSError | None = None  # a failed fsync: nothing is durable since
        # called once, in the event loop, when an fsync fails: the process should stop
        self.on_failure: Callable[[], None] | None = None
        self._notified = False

    async def commit(self, build: Callable[[], Unit | None]) -> int | None:
        """Begin (waiting for the write lock), call ``build`` in the transaction (under the
        lock: what is ready then goes in), check its guards, run its statements, commit.
        Returns the commit's ticket for :meth:`sync` (it is not on disk yet); None, with
        nothing written, when ``build`` gave nothing; ``Stale`` when a guard failed."""
        self._check()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, build)

    async def sync(self, ticket: int) -> None:
        """Return once commit ``ticket`` is on disk. ``OSError`` if an fsync failed, for
        this and every later commit: after a failed fsync the kernel may have dropped
        the pages, and a WAL frame counts only if every frame before it is intact, so
        nothing written since is known to be durable (as PostgreSQL, the process must
        be restarted, and SQLite recovers the WAL): :attr:`on_failure` is called, and
        :meth:`commit` too raises from then on (nothing more is written)."""
        self._check()
        if self._synced >= ticket:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._syncer, self._sync, ticket, loop)

    def _check(self) -> None:
        """Raise (and tell :attr:`on_failure`) once an fsync has failed."""
        if self._failed is not None:
            self._notify()
            raise OSError(self._failed.errno, f"an earlier fsync failed: {self._failed}")

    def _notify(self) -> None:
        if not self._notified and self.on_failure is not None:
            self._notified = True
            self.on_failure()

    async def close(self) -> None:
        """Close the connection and stop the threads (again: nothing to do)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)  # after a write in progress
        self._executor.shutdown(wait=True)
        self._syncer.shutdown(wait=True)  # syncs already asked for run first
        if self._wal is not None:
            os.close(self._wal)
            self._wal = None

    # -- in the writer's thread ---------------------------------------------------------

    def _transaction(self, build: Callable[[], Unit | None]) -> int | None:
        self._refuse_if_failed()  # failed since commit() looked: write nothing more
        conn = self._conn or self._connect()
        sql = "BEGIN IMMEDIATE"
        try:
            _begin(conn)
            try:
                self._refuse_if_failed()  # failed while this waited for the lock
                unit = build()
                if unit is None:
                    conn.execute("ROLLBACK")
                    return None
                for sql, params, rows in unit.guards:
                    if [tuple(r) for r in conn.execute(sql, params).fetchall()] != rows:
                        raise Stale("a guarded read changed since it was planned")
                for sql, many in unit.steps:
                    run_step(conn, sql, many)
                self._refuse_if_failed()  # failed while this wrote: roll back
                sql = "COMMIT"
                conn.execute(sql)
                self._committed += 1
                return self._committed
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(
                sql, None, exc, sqlite3.Error, hide_parameters=True
            ) from None

    def _refuse_if_failed(self) -> None:
        if self._failed is not None:
            raise OSError(self._failed.errno, f"an earlier fsync failed: {self._failed}")

    # -- in the sync thread ---------------------------------------------------------------

    def _sync(self, ticket: int, loop: asyncio.AbstractEventLoop) -> None:
        if self._failed is not None:
            raise OSError(self._failed.errno, f"an earlier fsync failed: {self._failed}")
        if self._synced >= ticket:  # an fsync that began after it covered it
            return
        target = self._committed  # every commit made so far is in the WAL file
        assert self._wal is not None, "a commit was made: the connection has its WAL"
        try:
            fsync_wal(self._wal)
        except OSError as exc:
            self._failed = exc
            log.critical("fsync of the SQLite WAL failed: %s; nothing more is acknowledged", exc)
            # from here: whoever awaits this sync may have been cancelled meanwhile
            loop.call_soon_threadsafe(self._notify)
            raise
        self._synced = max(self._synced, target)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.tune_sqlite_connection(conn, synchronous="NORMAL")  # see the class: sync()
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the WAL
        # The WAL's name from SQLite's own path of the database (symlinks resolved), kept
        # open as long as the connection: it stays the same file (restarts reuse it, and
        # only the last connection to close deletes it), and it sees every write error.
        # The database file itself is never opened here: closing a descriptor of it would
        # drop this process's POSIX locks on it.
        main = conn.execute("PRAGMA database_list").fetchone()[2]
        if self._wal is None:
            self._wal = os.open(f"{main}-wal", os.O_RDONLY)
        self._conn = conn
        return conn

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


def fsync_wal(fd: int) -> None:
    """fsync the WAL file: every frame written to it so far is then on disk (frames a
    checkpoint has copied into the database file were synced there by the checkpoint)."""
    os.fsync(fd)


def _begin(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, retried as :mod:`postroute.db` does (SQLite's own busy handler
    sleeps too long), sleeping in this thread."""
    deadline = time.monotonic() + db.LOCK_TIMEOUT
    delay = db.LOCK_RETRY_FIRST
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, db.LOCK_RETRY_MAX)


def for_url(url: str) -> SqliteWriter | None:
    """A writer for a SQLite database file; None for other databases (and in-memory)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return SqliteWriter(parsed.database)
