"""SQLite write transactions in one hand-off, for the busiest writers (the SMTP group
commit, the worker's outcomes).

Through SQLAlchemy's aiosqlite adaptor each statement is a round trip to aiosqlite's
thread, and each return waits its turn in a busy event loop, all while SQLite's one
write lock is held (measured in docs/performance-smtp.md: most of a group commit's
transaction was such waits). Here a whole transaction (``BEGIN IMMEDIATE``, guard
reads, its statements, ``COMMIT``) is one call in a thread of this process with a
sqlite3 connection of its own, so the lock is held for SQLite's own work: rows go in
multi-row statements (see :func:`_run`), and the commit's fsync is made after the lock
is released (see :class:`SqliteWriter`).

The statements are SQLAlchemy's, compiled once for SQLite, and the rows are converted by
its bind processors (:mod:`postroute.db`), mostly before the hand-off. A guard that no
longer holds (a read that must return what the caller planned with, or a statement
that must touch an exact number of rows) rolls the whole transaction back and the
write returns False: the caller then does it the ordinary way. Errors are SQLAlchemy's
``DBAPIError``, without the bound values.

PostgreSQL has no such path: its writers do not queue for one lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

from postroute import db

log = logging.getLogger("postroute.db")

Row = tuple[Any, ...]


@dataclass
class Unit:
    """One write transaction's guards and statements, compiled for SQLite."""

    dialect: Dialect
    guards: list[tuple[str, list[Any], list[Row]]] = field(default_factory=list)
    steps: list[tuple[str, list[Row], int | None]] = field(default_factory=list)

    @classmethod
    def merged(cls, dialect: Dialect, units: Sequence[Unit]) -> Unit:
        """Several units as one: guards in order; each plain INSERT's rows join its first
        step (other statements stay in order, apart). Units made alike (the same inserts
        in the same order, some left out) keep their order."""
        out = cls(dialect)
        first: dict[str, list[Row]] = {}
        for unit in units:
            out.guards.extend(unit.guards)
            for sql, rows, expect in unit.steps:
                mergeable = expect is None and sql.startswith("INSERT INTO ")
                if mergeable and sql in first:
                    first[sql].extend(rows)
                    continue
                mine = list(rows)
                out.steps.append((sql, mine, expect))
                if mergeable:
                    first[sql] = mine
        return out

    def guard(
        self, stmt: sa.Select[*tuple[Any, ...]], params: dict[str, Any], rows: Sequence[Row]
    ) -> None:
        """``stmt`` with ``params`` must return exactly ``rows`` (as :func:`db.fetch_all`
        returns them), else nothing is written."""
        sql, values = db.positional_params(stmt, self.dialect, params)
        self.guards.append((sql, values, list(rows)))

    def insert(self, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
        """Rows keyed by column (rows with other keys are a statement of their own)."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        for keys, group in groups.items():
            plan = db.positional_insert(table, keys, self.dialect)
            if plan is None:
                raise ValueError(f"{table.name}: columns with Python defaults need the ORM path")
            self.steps.append((plan[0], db.positional_rows(plan, group), None))

    def update(self, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]) -> None:
        """``UPDATE table SET ... WHERE key = ...`` per row, as :func:`db.update_by_key`:
        rows with distinct keys in one ``UPDATE ... FROM (VALUES ...)`` per set of
        columns (one step for SQLite, see :func:`_run`)."""
        for stmt, group in db.updates_by_key(table, key, rows):
            plan = db.positional(stmt, self.dialect)
            if plan is None:
                raise ValueError(f"{table.name}: onupdate columns need the ORM path")
            params = db.positional_rows(plan, group)
            keys = {p[-1] for p in params}  # as bound (the key's bind comes last)
            if (
                len(group) < 2
                or len(keys) < len(group)
                or not UPDATE_FROM
                or _unique_columns(table) & set(group[0])
            ):  # row by row: the same key twice, a UNIQUE column (checked per row), old SQLite
                self.steps.append((plan[0], params, None))
                continue
            # the plan's parameters: the SET columns in order, then the key (``_<name>``)
            names = [name[1:] for name in db.named(stmt, self.dialect).names]
            assert names[-1] == key, "the key's bind comes last (WHERE after SET)"
            quote = self.dialect.identifier_preparer.quote
            per = max(1, min(MULTI_ROWS, MAX_VARIABLES // len(names)))
            for start in range(0, len(params), per):
                chunk = params[start : start + per]
                sets = ", ".join(f"{quote(n)} = v.column{i}" for i, n in enumerate(names[:-1], 1))
                values = ", ".join(["(" + ", ".join("?" * len(names)) + ")"] * len(chunk))
                # names quoted by the dialect, every value bound
                sql = (
                    f"UPDATE {quote(table.name)} SET {sets} FROM (VALUES {values}) AS v "  # noqa: S608
                    f"WHERE {quote(table.name)}.{quote(key)} = v.column{len(names)}"
                )
                self.steps.append((sql, [tuple(itertools.chain.from_iterable(chunk))], None))

    def execute_once(self, stmt: sa.ClauseElement, *, expect: int | None = None) -> None:
        """``stmt`` with the values it holds (an ``IN`` list, say) as one statement: compiled
        here, not kept (:meth:`execute` is for statements built once)."""
        compiled = cast(SQLCompiler, stmt.compile(dialect=self.dialect))
        state = compiled.construct_expanded_state()
        names = list(state.positiontup or ())
        processors = state.processors
        values = [
            processors[n](state.parameters[n]) if n in processors else state.parameters[n]
            for n in names
        ]
        self.steps.append((state.statement, [tuple(values)], expect))

    def execute(
        self, stmt: sa.ClauseElement, rows: Sequence[dict[str, Any]], *, expect: int | None = None
    ) -> None:
        """``stmt`` (a statement built once, with named bind parameters) for each row;
        with ``expect``, the rows it changes in all must be exactly that many."""
        if rows:
            compiled = db.named(stmt, self.dialect)
            self.steps.append((compiled.sql, [compiled.values(row) for row in rows], expect))


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
        # called (in the event loop) when an fsync fails: the process should stop
        self.on_failure: Callable[[], None] | None = None

    async def write(self, build: Callable[[], Unit | None]) -> bool:
        """:meth:`commit`, then :meth:`sync`: True once the transaction is on disk."""
        ticket = await self.commit(build)
        if ticket is None:
            return False
        await self.sync(ticket)
        return True

    async def commit(self, build: Callable[[], Unit | None]) -> int | None:
        """Begin (waiting for the write lock), call ``build`` in the transaction (under the
        lock: what is ready then goes in), check its guards, run its statements, commit.
        Returns the commit's ticket for :meth:`sync` (it is not on disk yet); None, with
        nothing written, when ``build`` gave nothing or a guard failed."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, build)

    async def sync(self, ticket: int) -> None:
        """Return once commit ``ticket`` is on disk. ``OSError`` if an fsync failed, for
        this and every later commit: after a failed fsync the kernel may have dropped
        the pages, and a WAL frame counts only if every frame before it is intact, so
        nothing written since is known to be durable (as PostgreSQL, the process must
        be restarted, and SQLite recovers the WAL): :attr:`on_failure` is called."""
        if self._failed is not None:
            raise OSError(self._failed.errno, f"an earlier fsync failed: {self._failed}")
        if self._synced >= ticket:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._syncer, self._sync, ticket)
        except OSError:
            if self.on_failure is not None:
                self.on_failure()
            raise

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
        conn = self._conn or self._connect()
        sql = "BEGIN IMMEDIATE"
        try:
            _begin(conn)
            try:
                unit = build()
                if unit is None:
                    conn.execute("ROLLBACK")
                    return None
                for sql, params, rows in unit.guards:
                    if [tuple(r) for r in conn.execute(sql, params).fetchall()] != rows:
                        conn.execute("ROLLBACK")
                        return None
                for sql, many, expect in unit.steps:
                    changed = _run(conn, sql, many)
                    if expect is not None and changed != expect:
                        conn.execute("ROLLBACK")
                        return None
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

    # -- in the sync thread ---------------------------------------------------------------

    def _sync(self, ticket: int) -> None:
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


# A plain INSERT's rows go in multi-row statements: executemany() steps once per row, and
# each step gives up the GIL and must take it back from a busy event loop (measured in the
# worker: 20-45 us per row against 5-10 us alone). Bounded by SQLite's 32766 variables.
_ONE_ROW = re.compile(r"\(\?(?:, \?)*\)")
MULTI_ROWS = 500
MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999
UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)  # UPDATE ... FROM


@functools.cache
def _unique_columns(table: sa.Table) -> frozenset[str]:
    """Columns under a UNIQUE constraint or index (not the primary key: rows are found by
    it, and it is not set)."""
    found: set[str] = set()
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            found.update(c.key for c in constraint.columns)
    for index in table.indexes:
        if index.unique:
            found.update(c.key for c in index.columns)
    return frozenset(found)


def _run(conn: sqlite3.Connection, sql: str, rows: list[Row]) -> int:
    """``sql`` for each of ``rows``; the rows it changed in all."""
    head, values, group = sql.partition(" VALUES ")
    if (
        len(rows) < 2
        or not values
        or not head.startswith("INSERT INTO ")
        or not _ONE_ROW.fullmatch(group)
    ):
        return conn.executemany(sql, rows).rowcount
    per = max(1, min(MULTI_ROWS, MAX_VARIABLES // max(len(rows[0]), 1)))
    changed = 0
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        many = f"{head} VALUES {', '.join([group] * len(chunk))}"
        changed += conn.execute(many, list(itertools.chain.from_iterable(chunk))).rowcount
    return changed


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
