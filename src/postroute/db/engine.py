"""Engine and sessions: SQLite tuned (WAL, BEGIN IMMEDIATE retried in asyncio, reads
that take no write lock), PostgreSQL pooled. The caller that opens a session (request,
job, command) commits it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """``hide_parameters``: a database error must never carry message content, hashes or
    other bound values into an exception text or a log line."""
    if url.startswith("sqlite"):
        # One connection per process: SQLite has one writer anyway, and tasks of this
        # process then queue for it in asyncio instead of sleeping in SQLite's busy
        # handler. Other processes (api, smtp, worker apart) still wait on busy_timeout.
        engine = create_async_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": 30},
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
        )
        _tune_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        echo=echo,
        hide_parameters=True,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
    )


def _tune_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE (BEGIN for :func:`begin_read`).

    Every transaction takes the write lock up front: a deferred transaction that reads
    and later writes fails at once with SQLITE_BUSY when another process (api, worker)
    committed in between, instead of waiting on busy_timeout.

    Waiting for the lock: SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25,
    25, 50, 50, then 100 ms between tries, so a writer of another process often sleeps
    long after the lock was free (measured: the SMTP process waited 6.3 s of a 13 s run,
    p90 35 ms, for transactions held 6 ms at p50). ``busy_timeout`` is therefore 0 once
    connected, and ``BEGIN IMMEDIATE`` is retried here, sleeping in asyncio (the event
    loop keeps running) 0.5 ms at first and at most 4 ms, for up to 30 s in all.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        tune_sqlite_connection(dbapi_conn)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # On aiosqlite's connection itself: one hand-off to its thread, not three.
        driver = conn.connection.driver_connection
        if conn.get_execution_options().get(_READ_ONLY, False):
            _begin(driver, "BEGIN")  # WAL: a reader never waits
            return
        deadline = time.monotonic() + LOCK_TIMEOUT
        delay = LOCK_RETRY_FIRST
        while True:
            try:
                _begin(driver, "BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                    raise
            _sleep(delay)
            delay = min(delay * 2, LOCK_RETRY_MAX)


def tune_sqlite_connection(conn: Any, *, synchronous: str = "FULL") -> None:
    """The settings of every SQLite connection (SQLAlchemy's, and the bulk writer's,
    which syncs its commits itself: ``sqlite_writer``)."""
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: each commit is fsync'd, so a 202 or a 250 survives a power cut, not only a
    # crash of the process (WAL + NORMAL may lose the last commits). About 0.13 ms
    # per commit on this project's machines, shared by a whole batch or group commit.
    assert synchronous in ("FULL", "NORMAL")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=0")  # BEGIN IMMEDIATE is retried by the caller
    cursor.close()


def _begin(driver: Any, sql: str) -> None:
    """``sql`` on the aiosqlite connection, from SQLAlchemy's greenlet; sqlite3's error
    as SQLAlchemy's."""
    try:
        await_(driver.execute(sql))
    except sqlite3.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, sqlite3.Error) from None


LOCK_TIMEOUT = 30.0  # seconds a transaction waits for SQLite's write lock
LOCK_RETRY_FIRST = 0.0005
LOCK_RETRY_MAX = 0.004


def _sleep(seconds: float) -> None:
    """Sleep without blocking the event loop: SQLAlchemy's asyncio layer runs this sync
    code in a greenlet that can await."""
    await_(asyncio.sleep(seconds))


_READ_ONLY = "postroute_read_only"


async def begin_read(session: AsyncSession) -> None:
    """Start ``session``'s next transaction as a read: on SQLite a deferred BEGIN, which
    takes no write lock (in WAL mode readers neither wait for the writer nor block it).
    Only for work that does not write: a write there may fail at once with SQLITE_BUSY.
    Call it before the transaction's first statement; it ends at commit or rollback."""
    await session.connection(execution_options={_READ_ONLY: True})


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def transaction(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """A unit of work for jobs and commands: commit on success, roll back on error."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
