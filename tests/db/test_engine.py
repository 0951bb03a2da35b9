"""Transactions: reads do not wait for a writer; writers wait for each other."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from postroute.db import (
    begin_read,
    create_engine,
    insert_many,
    session_factory,
    transaction,
    update_by_key,
)
from postroute.models import Account, MessageContent
from postroute.models.base import _sqlite_text, table_of
from postroute.runtime import Runtime
from tests.conftest import BACKEND


async def test_a_read_does_not_wait_for_another_process_holding_the_write_lock(
    runtime: Runtime,
) -> None:
    other = create_engine(runtime.settings.db_url)  # another connection, as another process
    try:
        async with transaction(session_factory(other)) as writer:
            await writer.execute(sa.select(Account.id))  # BEGIN IMMEDIATE: lock taken
            async with runtime.sessions() as reader:
                await begin_read(reader)
                read = reader.execute(sa.select(sa.func.count()).select_from(Account))
                assert (await asyncio.wait_for(read, 5)).scalar_one() >= 0
                await reader.commit()
    finally:
        await other.dispose()


async def test_the_next_transaction_is_a_normal_one_again(runtime: Runtime) -> None:
    async with runtime.sessions() as session:
        await begin_read(session)
        await session.execute(sa.select(Account.id))
        await session.commit()
        conn = await session.connection()
        assert conn.sync_connection is not None
        assert not conn.sync_connection.get_execution_options().get("postroute_read_only")
        await session.rollback()


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's one write lock")
async def test_a_writer_waits_for_another_process_holding_the_write_lock(
    runtime: Runtime,
) -> None:
    other = create_engine(runtime.settings.db_url)  # another connection, as another process
    order: list[str] = []
    held = asyncio.Event()

    async def hold_the_lock() -> None:
        async with transaction(session_factory(other)) as writer:
            await writer.execute(sa.select(Account.id))  # BEGIN IMMEDIATE: lock taken
            held.set()
            await asyncio.sleep(0.3)
            order.append("first committed")

    async def write_too() -> None:
        await held.wait()
        async with transaction(runtime.sessions) as session:  # retried until free
            await session.execute(sa.select(Account.id))
            order.append("second began")

    try:
        await asyncio.gather(hold_the_lock(), write_too())
    finally:
        await other.dispose()
    assert order == ["first committed", "second began"]


@pytest.mark.parametrize(
    "given",
    [
        datetime(2026, 11, 21, 9, 30, 0, 5, tzinfo=UTC),
        datetime(2026, 11, 21, 10, 30, 0, 5, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 11, 21, 9, 30, 0, 5),  # naive: taken as UTC
    ],
    ids=["utc", "other-zone", "naive"],
)
async def test_timestamps_are_stored_as_utc_and_read_back_aware(
    runtime: Runtime, given: datetime
) -> None:
    table = table_of(Account)
    async with transaction(runtime.sessions) as session:
        conn = await session.connection()
        await conn.execute(sa.insert(table), [{"id": "acct_t", "name": "t", "created_at": given}])
    async with runtime.sessions() as session:
        stored = await session.scalar(sa.select(Account.created_at).where(Account.id == "acct_t"))
        text = await session.scalar(
            sa.select(sa.cast(table.c.created_at, sa.String)).where(table.c.id == "acct_t")
        )
    assert stored == datetime(2026, 11, 21, 9, 30, 0, 5, tzinfo=UTC)
    assert stored is not None and stored.tzinfo is not None
    if BACKEND == "sqlite":  # sortable text, the same as SQLAlchemy's own SQLite DATETIME
        assert text == "2026-11-21 09:30:00.000005"


async def test_bulk_inserts_store_what_the_orm_reads_back(runtime: Runtime) -> None:
    """``insert_many`` (on SQLite a positional fast path with SQLAlchemy's own conversions)
    stores booleans, timestamps, bytes and JSON as the ORM reads them; a column left out
    gets its Python-side default."""
    when = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    accounts = [
        {
            "id": f"acct_{i}",
            "name": f"n{i}",
            "track_opens": i == 1,
            "track_clicks": False,
            "created_at": when,
        }
        for i in range(3)
    ]
    async with transaction(runtime.sessions) as session:
        await insert_many(session, table_of(Account), accounts)
        await insert_many(
            session, table_of(Account), [{"id": "acct_d", "name": "d", "created_at": when}]
        )
        await insert_many(
            session,
            table_of(MessageContent),
            [
                {
                    "id": "cnt_1",
                    "account_id": "acct_1",
                    "mime": b"\x00\xffbytes\r\n",
                    "size": 9,
                    "created_at": when,
                }
            ],
        )
    async with runtime.sessions() as session:
        found = {a.id: a for a in await session.scalars(sa.select(Account))}
        content = await session.get(MessageContent, "cnt_1")
    assert [found[f"acct_{i}"].track_opens for i in range(3)] == [False, True, False]
    assert found["acct_d"].track_opens is False and found["acct_d"].track_clicks is False
    assert found["acct_2"].created_at == when
    assert content is not None and content.mime == b"\x00\xffbytes\r\n"


async def test_bulk_insert_rows_with_other_keys_write_nothing(runtime: Runtime) -> None:
    rows = [
        {"id": "acct_x", "name": "x", "created_at": datetime.now(UTC)},
        {"id": "acct_y", "nom": "y", "created_at": datetime.now(UTC)},
    ]
    with pytest.raises(sa.exc.StatementError):
        async with transaction(runtime.sessions) as session:
            await insert_many(session, table_of(Account), rows)
    async with runtime.sessions() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Account)) == 0


async def test_bulk_updates_by_key_with_different_columns_per_row(runtime: Runtime) -> None:
    when = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    later = when + timedelta(hours=1)
    rows = [{"id": f"acct_{i}", "name": f"n{i}", "created_at": when} for i in range(3)]
    async with transaction(runtime.sessions) as session:
        await insert_many(session, table_of(Account), rows)
    async with transaction(runtime.sessions) as session:
        await update_by_key(
            session,
            table_of(Account),
            "id",
            [
                {"id": "acct_0", "track_opens": True, "created_at": later},
                {"id": "acct_1", "name": "renamed"},
                {"id": "acct_2", "track_opens": True, "created_at": later},
            ],
        )
    async with runtime.sessions() as session:
        found = {a.id: a for a in await session.scalars(sa.select(Account))}
    assert [(a.name, a.track_opens, a.created_at) for _, a in sorted(found.items())] == [
        ("n0", True, later),
        ("renamed", False, when),
        ("n2", True, later),
    ]


async def test_a_failing_bulk_insert_raises_sqlalchemys_error_without_the_values(
    runtime: Runtime,
) -> None:
    row = {"id": "acct_dup", "name": "secret-looking-value", "created_at": datetime.now(UTC)}
    async with transaction(runtime.sessions) as session:
        await insert_many(session, table_of(Account), [row])
    with pytest.raises(sa.exc.IntegrityError) as caught:
        async with transaction(runtime.sessions) as session:
            await insert_many(session, table_of(Account), [{**row, "name": "zz-second-value"}])
    assert "secret-looking-value" not in str(caught.value)
    assert "zz-second-value" not in str(caught.value)
    async with runtime.sessions() as session:  # the first row only
        names = list(await session.scalars(sa.select(Account.name)))
    assert names == ["secret-looking-value"]


def test_sqlite_timestamp_text_tells_apart_times_that_differ_only_in_fold() -> None:
    """The text cache must not confuse two instants that compare equal (a repeated hour)."""
    new_york = ZoneInfo("America/New_York")
    first = datetime(2023, 11, 5, 1, 30, tzinfo=new_york)  # EDT, 05:30 UTC
    second = first.replace(fold=1)  # the hour again, EST: 06:30 UTC
    assert first == second
    assert _sqlite_text(first) == "2023-11-05 05:30:00.000000"
    assert _sqlite_text(second) == "2023-11-05 06:30:00.000000"
    assert _sqlite_text(datetime(2023, 11, 5, 6, 30, tzinfo=UTC)) == "2023-11-05 06:30:00.000000"
