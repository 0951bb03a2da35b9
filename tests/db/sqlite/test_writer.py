"""The SQLite writer: a whole write transaction in one hand-off, all or nothing; its
commits acknowledged once the WAL is synced."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from postroute.db import create_engine, fetch_all, session_factory, transaction
from postroute.db.changes import Stale
from postroute.db.sqlite import unit as sqlite_unit
from postroute.db.sqlite import writer as sqlite_writer
from postroute.db.sqlite.unit import Unit
from postroute.db.sqlite.writer import SqliteWriter
from postroute.models import Account, MessageContent
from postroute.models.base import table_of
from postroute.runtime import Runtime
from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's writer thread")

ACCOUNTS = table_of(Account)
NAMES = sa.select(Account.id, Account.name).order_by(Account.id)
BY_NAME = sa.select(Account.id).where(Account.name == sa.bindparam("name"))
RENAME = (
    sa.update(Account).where(Account.id == sa.bindparam("key")).values(name=sa.bindparam("new"))
)
WHEN = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def account(key: str, name: str) -> dict[str, object]:
    return {
        "id": key,
        "name": name,
        "track_opens": False,
        "track_clicks": False,
        "require_verified_domain": False,
        "unsubscribe_header": False,
        "created_at": WHEN,
    }


async def names(runtime: Runtime) -> list[tuple[str, str]]:
    async with transaction(runtime.sessions) as session:
        return [(r[0], r[1]) for r in (await session.execute(NAMES)).all()]


async def write(writer: SqliteWriter, build: Callable[[], Unit | None]) -> bool:
    """Commit and sync: True once on disk; False when there was nothing to write or a
    guard did not hold (nothing written)."""
    try:
        ticket = await writer.commit(build)
    except Stale:
        return False
    if ticket is None:
        return False
    await writer.sync(ticket)
    return True


@pytest.fixture
def writer(runtime: Runtime) -> SqliteWriter:
    assert runtime.writer is not None, "Runtime.build gives a SQLite database a writer"
    return runtime.writer


async def test_a_unit_is_written_in_one_transaction(runtime: Runtime, writer: SqliteWriter) -> None:
    before = await names(runtime)
    unit = Unit(runtime.engine.dialect)
    unit.insert(ACCOUNTS, [account("acc_w1", "one"), account("acc_w2", "two")])
    unit.update(ACCOUNTS, "id", [{"id": "acc_w2", "name": "deux"}])
    assert await write(writer, lambda: unit)
    assert await names(runtime) == sorted([*before, ("acc_w1", "one"), ("acc_w2", "deux")])
    async with transaction(runtime.sessions) as session:  # converted as SQLAlchemy would
        created = await session.scalar(sa.select(Account.created_at).where(Account.id == "acc_w1"))
    assert created == WHEN


async def test_a_guard_that_no_longer_holds_writes_nothing(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    first = Unit(runtime.engine.dialect)
    first.insert(ACCOUNTS, [account("acc_g1", "guarded")])
    assert await write(writer, lambda: first)
    async with transaction(runtime.sessions) as session:  # what the caller planned with
        seen = await fetch_all(session, BY_NAME, {"name": "guarded"})
    assert seen == [("acc_g1",)]

    def guarded(rows: list[tuple[object, ...]]) -> Unit:
        unit = Unit(runtime.engine.dialect)
        unit.guard(BY_NAME, {"name": "guarded"}, rows)
        unit.insert(ACCOUNTS, [account("acc_g2", "second")])
        return unit

    assert not await write(writer, lambda: guarded([("acc_other",)]))
    assert ("acc_g2", "second") not in await names(runtime)
    assert await write(writer, lambda: guarded(seen))
    assert ("acc_g2", "second") in await names(runtime)


async def test_a_guard_holding_its_own_values_converts_them_as_sqlalchemy_would(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    """A time in another zone next to an IN list is compared as the naive UTC text stored,
    not as the sqlite3 module's own (deprecated) rendering of it."""
    first = Unit(runtime.engine.dialect)
    first.insert(ACCOUNTS, [account("acc_t1", "timed")])
    assert await write(writer, lambda: first)
    elsewhere = WHEN.astimezone(timezone(timedelta(hours=2)))
    stmt = sa.select(Account.id).where(
        Account.id.in_(["acc_t1", "acc_none"]), Account.created_at == elsewhere
    )

    def guarded() -> Unit:
        unit = Unit(runtime.engine.dialect)
        unit.guard(stmt, None, [("acc_t1",)])
        unit.insert(ACCOUNTS, [account("acc_t2", "after")])
        return unit

    assert await write(writer, guarded)
    assert ("acc_t2", "after") in await names(runtime)


async def test_merged_units_keep_a_guard_that_expects_other_rows(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    """Two plans of one read, made at different times (the SMTP group commit merges them):
    the one planned on stale rows makes the merged write stale, not dropped as a repeat."""
    dialect = runtime.engine.dialect
    first = Unit(dialect)
    first.insert(ACCOUNTS, [account("acc_m1", "merged")])
    assert await write(writer, lambda: first)

    def plan(seen: list[tuple[object, ...]], key: str) -> Unit:
        unit = Unit(dialect)
        unit.guard(BY_NAME, {"name": "merged"}, seen)
        unit.insert(ACCOUNTS, [account(key, key)])
        return unit

    fresh, stale = plan([("acc_m1",)], "acc_m2"), plan([], "acc_m3")
    merged = Unit.merged(dialect, [fresh, stale])
    assert len(merged.guards) == 2
    assert not await write(writer, lambda: merged)
    assert {"acc_m2", "acc_m3"}.isdisjoint(k for k, _ in await names(runtime))


async def test_nothing_to_write_is_no_transaction(runtime: Runtime, writer: SqliteWriter) -> None:
    assert not await write(writer, lambda: None)
    unit = Unit(runtime.engine.dialect)
    unit.insert(ACCOUNTS, [account("acc_n1", "after")])
    assert await write(writer, lambda: unit)  # the connection is usable afterwards


async def test_an_error_rolls_back_and_does_not_show_the_values(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    unit = Unit(runtime.engine.dialect)
    unit.insert(ACCOUNTS, [account("acc_x1", "secret-name-1")])
    unit.insert(ACCOUNTS, [account("acc_x1", "secret-name-2")])  # the same primary key
    with pytest.raises(DBAPIError) as raised:
        await write(writer, lambda: unit)
    assert "secret-name" not in str(raised.value)
    assert "UNIQUE" in str(raised.value)
    assert all(key != "acc_x1" for key, _ in await names(runtime))

    def broken() -> Unit:
        raise RuntimeError("building failed")

    with pytest.raises(RuntimeError, match="building failed"):
        await write(writer, broken)
    later = Unit(runtime.engine.dialect)
    later.insert(ACCOUNTS, [account("acc_x2", "fine")])
    assert await write(writer, lambda: later)  # no transaction was left open


async def test_it_waits_for_another_connection_holding_the_write_lock(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    other = create_engine(runtime.settings.db_url)  # another process, as it were
    unit = Unit(runtime.engine.dialect)
    unit.insert(ACCOUNTS, [account("acc_l1", "waited")])
    order: list[str] = []
    try:
        async with transaction(session_factory(other)) as holder:
            await holder.execute(sa.select(Account.id))  # BEGIN IMMEDIATE: lock taken
            written = asyncio.create_task(write(writer, lambda: unit))
            await asyncio.sleep(0.2)
            assert not written.done()
            order.append("released")
        assert await asyncio.wait_for(written, 10)
        order.append("written")
    finally:
        await other.dispose()
    assert order == ["released", "written"]
    assert ("acc_l1", "waited") in await names(runtime)


async def test_close_twice_and_other_databases(runtime: Runtime, writer: SqliteWriter) -> None:
    await writer.close()
    await writer.close()
    assert sqlite_writer.for_url("postgresql+asyncpg://u@127.0.0.1/db") is None
    assert sqlite_writer.for_url("sqlite+aiosqlite:///:memory:") is None
    assert isinstance(sqlite_writer.for_url("sqlite+aiosqlite:////tmp/x.db"), SqliteWriter)


def test_columns_with_python_defaults_are_refused(runtime: Runtime) -> None:
    unit = Unit(runtime.engine.dialect)
    assert any(c.default is not None for c in ACCOUNTS.c)  # track_opens, track_clicks
    with pytest.raises(ValueError, match="Python defaults"):
        unit.insert(ACCOUNTS, [{"id": "acc_d1", "name": "d", "created_at": WHEN}])


async def test_merged_units_write_each_statement_once_with_all_rows(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    dialect = runtime.engine.dialect
    first, second, third = Unit(dialect), Unit(dialect), Unit(dialect)
    first.insert(ACCOUNTS, [account("acc_m1", "m-one")])
    second.insert(ACCOUNTS, [account("acc_m2", "m-two")])
    second.execute(RENAME, [{"key": "acc_m2", "new": "m-two-renamed"}])
    third.insert(ACCOUNTS, [account("acc_m3", "m-three")])
    third.execute(RENAME, [{"key": "acc_m3", "new": "m-three-renamed"}])
    merged = Unit.merged(dialect, [first, second, third])
    inserts = [rows for sql, rows in merged.steps if sql.startswith("INSERT")]
    assert [len(rows) for rows in inserts] == [3]  # one executemany for the three rows
    assert len(merged.steps) == 3  # the insert, then each update apart
    assert len(first.steps[0][1]) == 1  # the parts are left as they were
    assert await write(writer, lambda: merged)
    assert {("acc_m1", "m-one"), ("acc_m2", "m-two-renamed"), ("acc_m3", "m-three-renamed")} <= set(
        await names(runtime)
    )


CONTENTS = table_of(MessageContent)


def content(key: str, size: int) -> dict[str, object]:
    return {"id": key, "account_id": "acc_c", "mime": b"x", "size": size, "created_at": WHEN}


async def test_updates_of_many_rows_in_one_statement_read_back_as_written(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    dialect = runtime.engine.dialect
    later = datetime(2026, 11, 23, 4, 5, 6, 789, tzinfo=UTC)
    setup = Unit(dialect)
    setup.insert(CONTENTS, [content(f"cnt_u{i}", i) for i in range(4)])
    assert await write(writer, lambda: setup)
    unit = Unit(dialect)
    unit.update(
        CONTENTS,
        "id",
        [
            {"id": "cnt_u0", "size": 100, "created_at": later},
            {"id": "cnt_u1", "size": 101, "created_at": later},
            {"id": "cnt_u2", "size": 102},  # other columns: a statement of its own
        ],
    )
    assert [sql[:6] for sql, _ in unit.steps] == ["UPDATE", "UPDATE"]
    assert "FROM (VALUES" in unit.steps[0][0]  # two rows, one statement
    twice = Unit(dialect)  # the same key twice: row by row, the last one wins
    twice.update(CONTENTS, "id", [{"id": "cnt_u3", "size": 7}, {"id": "cnt_u3", "size": 8}])
    assert "VALUES" not in twice.steps[0][0]
    assert await write(writer, lambda: Unit.merged(dialect, [unit, twice]))
    async with transaction(runtime.sessions) as session:
        rows = (
            await session.execute(
                sa.select(MessageContent.id, MessageContent.size, MessageContent.created_at)
                .where(MessageContent.id.like("cnt_u%"))
                .order_by(MessageContent.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("cnt_u0", 100, later),
        ("cnt_u1", 101, later),
        ("cnt_u2", 102, WHEN),
        ("cnt_u3", 8, WHEN),
    ]


async def test_updates_setting_a_unique_column_go_row_by_row(
    runtime: Runtime, writer: SqliteWriter
) -> None:
    """SQLite checks UNIQUE per row in join order: a swap that is valid row by row (b
    takes a new name, then a takes b's old one) must not fail as one statement."""
    dialect = runtime.engine.dialect
    setup = Unit(dialect)
    setup.insert(ACCOUNTS, [account("acc_qa", "qa"), account("acc_qb", "qb")])
    assert await write(writer, lambda: setup)
    swap = Unit(dialect)
    swap.update(ACCOUNTS, "id", [{"id": "acc_qb", "name": "qr"}, {"id": "acc_qa", "name": "qb"}])
    assert "VALUES" not in swap.steps[0][0]
    assert await write(writer, lambda: swap)
    assert {("acc_qa", "qb"), ("acc_qb", "qr")} <= set(await names(runtime))


async def test_values_in_an_in_list_are_converted(runtime: Runtime, writer: SqliteWriter) -> None:
    setup = Unit(runtime.engine.dialect)
    setup.insert(CONTENTS, [content("cnt_in1", 1), content("cnt_in2", 2)])
    assert await write(writer, lambda: setup)
    gone = Unit(runtime.engine.dialect)
    stmt = sa.delete(MessageContent).where(
        MessageContent.created_at.in_([WHEN]), MessageContent.id.in_(["cnt_in1", "cnt_in2"])
    )
    gone.execute_once(stmt)  # the timestamp as stored (text), or nothing matches
    assert await write(writer, lambda: gone)
    async with transaction(runtime.sessions) as session:
        left = await session.scalar(
            sa.select(sa.func.count()).where(MessageContent.id.in_(["cnt_in1", "cnt_in2"]))
        )
    assert left == 0


async def test_inserts_of_many_rows_go_in_statements_of_bounded_size(
    runtime: Runtime, writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_unit, "MULTI_ROWS", 3)  # 7 rows: statements of 3, 3 and 1
    statements: list[str] = []
    unit = Unit(runtime.engine.dialect)
    unit.insert(ACCOUNTS, [account(f"acc_b{i}", f"b{i}") for i in range(7)])

    def traced() -> Unit:  # in the writer's thread, on its connection
        assert writer._conn is not None
        writer._conn.set_trace_callback(statements.append)
        return unit

    try:
        assert await write(writer, traced)
    finally:
        assert writer._conn is not None
        writer._conn.set_trace_callback(None)
    inserts = [sql for sql in statements if sql.startswith("INSERT")]
    assert [sql.count("'acc_b") for sql in inserts] == [3, 3, 1]
    assert sum(1 for key, _ in await names(runtime) if key.startswith("acc_b")) == 7


async def test_a_commit_is_acknowledged_only_once_the_wal_is_synced(
    runtime: Runtime, writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer commits with synchronous=NORMAL (the lock is free before the disk is
    done) and fsyncs the WAL itself: ``write`` returns after that fsync, and one fsync
    covers every commit made before it."""
    synced: list[str] = []
    real = sqlite_writer.fsync_wal

    def recording(fd: int) -> None:
        real(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(sqlite_writer, "fsync_wal", recording)
    dialect = runtime.engine.dialect
    first, second = Unit(dialect), Unit(dialect)
    first.insert(ACCOUNTS, [account("acc_s1", "s1")])
    second.insert(ACCOUNTS, [account("acc_s2", "s2")])
    one = await writer.commit(lambda: first)
    two = await writer.commit(lambda: second)
    assert one is not None and two is not None and two > one
    assert synced == []  # committed (visible) but not yet acknowledged as durable
    await writer.sync(one)
    await writer.sync(two)  # covered by the fsync made for the first
    assert synced == [runtime.settings.db_url.split("///", 1)[1] + "-wal"]
    third = Unit(dialect)
    third.insert(ACCOUNTS, [account("acc_s3", "s3")])
    assert await write(writer, lambda: third)
    assert len(synced) == 2

    async with transaction(runtime.sessions) as session:  # SQLAlchemy's connections: FULL
        assert (await session.execute(sa.text("PRAGMA synchronous"))).scalar_one() == 2

    def level() -> Unit | None:
        assert writer._conn is not None
        seen.append(writer._conn.execute("PRAGMA synchronous").fetchone()[0])
        return None

    seen: list[int] = []
    await write(writer, level)
    assert seen == [1]  # NORMAL: the WAL is synced by the writer itself


async def test_after_a_failed_fsync_no_later_commit_is_acknowledged(
    runtime: Runtime, writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def once_broken(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_writer, "fsync_wal", once_broken)
    told: list[None] = []
    writer.on_failure = lambda: told.append(None)
    first, second = Unit(runtime.engine.dialect), Unit(runtime.engine.dialect)
    first.insert(CONTENTS, [content("cnt_f1", 1)])
    second.insert(CONTENTS, [content("cnt_f2", 2)])
    with pytest.raises(OSError, match="Input/output"):
        await write(writer, lambda: first)
    with pytest.raises(OSError, match="an earlier fsync failed"):
        await write(writer, lambda: second)  # its frames follow ones that may be lost
    assert len(calls) == 1
    assert told == [None]  # once
    async with runtime.engine.connect() as conn:  # the second was not even written
        ids = (await conn.execute(sa.text("SELECT id FROM message_contents"))).scalars().all()
    assert ids == ["cnt_f1"]


async def test_a_transaction_waiting_for_the_lock_when_an_fsync_fails_writes_nothing(
    runtime: Runtime, writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next batch is written while the previous one is synced: if that sync fails
    while the next waits for the lock (another process holds it), the next one must not
    commit (its sessions would get 451 for stored mail)."""
    started, release = threading.Event(), threading.Event()

    def slow_broken(fd: int) -> None:
        started.set()
        release.wait(10)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_writer, "fsync_wal", slow_broken)
    first, second = Unit(runtime.engine.dialect), Unit(runtime.engine.dialect)
    first.insert(CONTENTS, [content("cnt_w1", 1)])
    second.insert(CONTENTS, [content("cnt_w2", 2)])
    ticket = await writer.commit(lambda: first)
    assert ticket is not None
    other = create_engine(runtime.settings.db_url)  # another process, as it were
    try:
        async with transaction(session_factory(other)) as holder:
            await holder.execute(sa.select(Account.id))  # BEGIN IMMEDIATE: lock taken
            synced = asyncio.ensure_future(writer.sync(ticket))
            await asyncio.to_thread(started.wait, 10)
            waiting = asyncio.ensure_future(writer.commit(lambda: second))
            await asyncio.sleep(0.2)  # it passed its first look, and waits for the lock
            release.set()
            with pytest.raises(OSError, match="Input/output"):
                await synced
        with pytest.raises(OSError, match="an earlier fsync failed"):
            await asyncio.wait_for(waiting, 10)
    finally:
        await other.dispose()
    async with runtime.engine.connect() as conn:
        ids = (await conn.execute(sa.text("SELECT id FROM message_contents"))).scalars().all()
    assert ids == ["cnt_w1"]


async def test_a_failed_fsync_is_told_even_when_its_waiter_is_cancelled(
    runtime: Runtime, writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's recorder task may be cancelled (at stop) while its fsync fails."""
    started, release = threading.Event(), threading.Event()

    def slow_broken(fd: int) -> None:
        started.set()
        release.wait(10)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_writer, "fsync_wal", slow_broken)
    told = asyncio.Event()
    writer.on_failure = told.set
    unit = Unit(runtime.engine.dialect)
    unit.insert(CONTENTS, [content("cnt_c1", 1)])
    waiter = asyncio.ensure_future(write(writer, lambda: unit))
    await asyncio.to_thread(started.wait, 10)
    waiter.cancel()
    release.set()
    await asyncio.wait_for(told.wait(), 10)
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_the_wal_is_found_through_a_symlinked_path(tmp_path: Path, runtime: Runtime) -> None:
    """SQLite names the WAL after the database's real path: the writer fsyncs that file,
    not ``<link>-wal`` (missing) nor the database file."""
    real = Path(runtime.settings.db_url.split("///", 1)[1])
    link = tmp_path / "linked" / "postroute.db"
    link.parent.mkdir()
    link.symlink_to(real)
    linked = SqliteWriter(str(link))
    try:
        unit = Unit(runtime.engine.dialect)
        unit.insert(CONTENTS, [content("cnt_l1", 1)])
        assert await write(linked, lambda: unit)
        assert linked._wal is not None
        assert os.readlink(f"/proc/self/fd/{linked._wal}") == f"{real}-wal"
    finally:
        await linked.close()
