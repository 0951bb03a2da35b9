"""``db.fetch_all``: the rows of a prebuilt SELECT in the session's own transaction (on
SQLite straight from aiosqlite's connection), as plain tuples, with the bind parameters
converted as SQLAlchemy would, and an error that never shows the bound values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from postroute.db import begin_read, fetch_all, insert_many, transaction
from postroute.models import Account
from postroute.models.base import table_of
from postroute.runtime import Runtime

WHEN = datetime(2026, 11, 21, 9, 30, 0, 5, tzinfo=UTC)

NAMES_SINCE = (
    sa.select(Account.id, Account.name)
    .where(Account.created_at >= sa.bindparam("since"))
    .order_by(Account.id)
)
AT = sa.select(Account.id).where(Account.created_at == sa.bindparam("when"))
BROKEN: sa.Select[Any] = (
    sa.select(sa.column("no_such_column"))
    .select_from(table_of(Account))
    .where(Account.name == sa.bindparam("name"))
)


async def test_it_sees_rows_written_earlier_in_its_transaction(runtime: Runtime) -> None:
    class Undone(Exception):
        pass

    with pytest.raises(Undone):
        async with transaction(runtime.sessions) as session:
            assert await fetch_all(session, NAMES_SINCE, {"since": WHEN}) == []
            await insert_many(
                session, table_of(Account), [{"id": "acct_a", "name": "a", "created_at": WHEN}]
            )
            session.add(Account(id="acct_b", name="b", created_at=WHEN + timedelta(seconds=1)))
            await session.flush()
            rows = await fetch_all(session, NAMES_SINCE, {"since": WHEN})
            assert rows == [("acct_a", "a"), ("acct_b", "b")]
            assert all(type(row) is tuple for row in rows)
            later = await fetch_all(session, NAMES_SINCE, {"since": WHEN + timedelta(seconds=1)})
            assert later == [("acct_b", "b")]
            raise Undone  # rolled back: nothing was committed
    async with runtime.sessions() as session:
        await begin_read(session)
        assert await fetch_all(session, NAMES_SINCE, {"since": WHEN}) == []
        await session.commit()


async def test_bound_values_are_converted_as_sqlalchemy_does(runtime: Runtime) -> None:
    """A time in another zone (stored as UTC) finds its row: on SQLite the column's bind
    processor makes it the stored text."""
    async with transaction(runtime.sessions) as session:
        await insert_many(
            session, table_of(Account), [{"id": "acct_t", "name": "t", "created_at": WHEN}]
        )
    same = WHEN.astimezone(timezone(timedelta(hours=1)))
    async with runtime.sessions() as session:
        await begin_read(session)
        assert await fetch_all(session, AT, {"when": same}) == [("acct_t",)]
        assert await fetch_all(session, AT, {"when": WHEN + timedelta(microseconds=1)}) == []
        first = await fetch_all(session, sa.select(Account.id, Account.created_at), {})
        again = await fetch_all(session, sa.select(Account.id, Account.created_at), {})
        assert first == again and len(first) == 1  # read the same way: equal
        await session.commit()


async def test_an_sql_error_is_sqlalchemys_without_the_bound_values(runtime: Runtime) -> None:
    with pytest.raises(sa.exc.DBAPIError) as caught:
        async with transaction(runtime.sessions) as session:
            await insert_many(
                session, table_of(Account), [{"id": "acct_e", "name": "e", "created_at": WHEN}]
            )
            await fetch_all(session, BROKEN, {"name": "secret-looking-value"})
    text = str(caught.value)
    assert "no_such_column" in text  # the database's own reason is kept
    assert "secret-looking-value" not in text
    async with runtime.sessions() as session:  # the whole transaction was rolled back
        assert await session.scalar(sa.select(sa.func.count()).select_from(Account)) == 0
