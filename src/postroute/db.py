"""Engine and sessions. The caller that opens a session (request, job, command) commits it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

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
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: each commit is fsync'd, so a 202 or a 250 survives a power cut, not only a
        # crash of the process (WAL + NORMAL may lose the last commits). About 0.13 ms
        # per commit on this project's machines, shared by a whole batch or group commit.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


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
