"""One write path: a ``Changes`` runs through the runtime's store the same way on every
backend (on a SQLite file one hand-off to the writer thread; elsewhere an ordinary
transaction): its statements all or nothing, its guards checked (``Stale``, nothing
written), inserts of the same rows joined into one statement in their first place."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from postroute.db import fetch_all, transaction
from postroute.db.changes import Changes, Insert, Stale
from postroute.models import Account, MessageContent
from postroute.models.base import table_of
from postroute.runtime import Runtime

ACCOUNTS = table_of(Account)
CONTENTS = table_of(MessageContent)
WHEN = datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
BY_NAME = sa.select(Account.id).where(Account.name == sa.bindparam("name"))
RENAME = (
    sa.update(Account).where(Account.id == sa.bindparam("b_id")).values(name=sa.bindparam("b_name"))
)


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


def content(key: str, size: int) -> dict[str, object]:
    return {"id": key, "account_id": "acct_c", "mime": b"x", "size": size, "created_at": WHEN}


async def names(runtime: Runtime) -> dict[str, str]:
    async with transaction(runtime.sessions) as session:
        return {r[0]: r[1] for r in (await session.execute(sa.select(Account.id, Account.name)))}


def test_inserts_of_the_same_rows_join_their_first_place() -> None:
    changes = Changes()
    changes.insert(ACCOUNTS, [account("acct_1", "one")])
    changes.insert(CONTENTS, [content("cnt_1", 1)])
    other = Changes()
    other.insert(ACCOUNTS, [account("acct_2", "two")])
    changes.extend(other)
    assert [
        (type(s), s.table.name, len(s.rows)) for s in changes.steps if isinstance(s, Insert)
    ] == [
        (Insert, "accounts", 2),
        (Insert, "message_contents", 1),
    ]


async def test_every_kind_of_step_is_written_in_one_transaction(runtime: Runtime) -> None:
    changes = Changes()
    changes.insert(
        ACCOUNTS, [account("acct_1", "one"), account("acct_2", "two"), account("acct_3", "three")]
    )
    changes.update(
        ACCOUNTS, "id", [{"id": "acct_1", "name": "uno"}, {"id": "acct_2", "name": "dos"}]
    )
    changes.execute(RENAME, [{"b_id": "acct_3", "b_name": "tres"}])
    changes.execute_once(sa.delete(Account).where(Account.id.in_(["acct_2"])))
    await runtime.store.write(changes)
    assert await names(runtime) == {"acct_1": "uno", "acct_3": "tres"}


async def test_a_guard_that_no_longer_holds_writes_nothing(runtime: Runtime) -> None:
    first = Changes()
    first.insert(ACCOUNTS, [account("acct_g", "guarded")])
    await runtime.store.write(first)
    async with transaction(runtime.sessions) as session:  # what a caller plans with
        seen = await fetch_all(session, BY_NAME, {"name": "guarded"})

    def guarded(rows: list[tuple[object, ...]]) -> Changes:
        changes = Changes()
        changes.guard(BY_NAME, rows, {"name": "guarded"})
        changes.insert(ACCOUNTS, [account("acct_h", "second")])
        return changes

    with pytest.raises(Stale):
        await runtime.store.write(guarded([("acct_other",)]))
    assert "acct_h" not in await names(runtime)
    await runtime.store.write(guarded(seen))
    assert (await names(runtime))["acct_h"] == "second"


async def test_a_guard_holding_its_own_values(runtime: Runtime) -> None:
    await runtime.store.write(Changes(steps=[Insert(ACCOUNTS, [account("acct_v", "v")])]))
    stmt = sa.select(Account.id).where(Account.id.in_(["acct_v", "acct_w"])).order_by(Account.id)
    ok = Changes()
    ok.guard(stmt, [("acct_v",)])
    ok.update(ACCOUNTS, "id", [{"id": "acct_v", "name": "vv"}])
    await runtime.store.write(ok)
    stale = Changes()
    stale.guard(stmt, [("acct_v",), ("acct_w",)])
    stale.update(ACCOUNTS, "id", [{"id": "acct_v", "name": "never"}])
    with pytest.raises(Stale):
        await runtime.store.write(stale)
    assert (await names(runtime))["acct_v"] == "vv"


async def test_an_error_writes_nothing_and_shows_no_value(runtime: Runtime) -> None:
    changes = Changes()
    changes.insert(ACCOUNTS, [account("acct_x", "secret-name-1")])
    changes.execute_once(sa.insert(Account).values(**account("acct_x", "secret-name-2")))
    with pytest.raises(sa.exc.DBAPIError) as raised:
        await runtime.store.write(changes)
    assert "secret-name" not in str(raised.value)
    assert "acct_x" not in await names(runtime)


async def test_nothing_to_write_is_no_commit(runtime: Runtime) -> None:
    assert await runtime.store.commit(lambda: []) is None
