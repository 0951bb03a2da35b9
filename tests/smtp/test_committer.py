"""Group commit: sessions arriving during a commit share the next transaction; a refusal
stays with its item; a failed transaction fails every item of its batch. And through the
listeners: concurrent sessions each get their own reply."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.api.runtime import Runtime
from postroute.db import create_engine, session_factory, transaction
from postroute.smtp.committer import Build, Committer
from postroute.sqlite_unit import Unit
from postroute.sqlite_writer import SqliteWriter
from tests.conftest import Tenant
from tests.smtp.conftest import BASIC, Ports, RawClient, message, queued_id

Result = int | errors.DomainError


async def test_items_arriving_during_a_commit_share_the_next_one(runtime: Runtime) -> None:
    batches: list[list[int]] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def process(session: AsyncSession, items: Sequence[int]) -> list[Result]:
        batches.append(list(items))
        await session.execute(sa.text("SELECT 1"))
        if len(batches) == 1:
            started.set()
            await release.wait()  # the first commit is slow: the others queue up
        return [errors.ValidationFailed("odd") if i == 3 else i * 10 for i in items]

    committer: Committer[int, int] = Committer(lambda: runtime.sessions, process)
    first = asyncio.create_task(committer.run(0, 100))
    await started.wait()
    rest = [asyncio.create_task(committer.run(i, 100)) for i in range(1, 5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    await committer.close()
    assert batches == [[0], [1, 2, 3, 4]]
    assert results[:3] == [0, 10, 20] and results[4] == 40
    assert isinstance(results[3], errors.ValidationFailed)


async def test_items_arriving_while_it_waits_for_the_database_join_its_batch(
    runtime: Runtime,
) -> None:
    """The batch is taken once the transaction has begun: on SQLite the process's one
    connection (and the write lock) may be busy, and what arrives meanwhile joins."""
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL begins at once: there is no wait to join")
    batches: list[list[int]] = []

    async def process(session: AsyncSession, items: Sequence[int]) -> list[Result]:
        batches.append(list(items))
        await session.execute(sa.text("SELECT 1"))
        return [i * 10 for i in items]

    committer: Committer[int, int] = Committer(lambda: runtime.sessions, process)
    async with runtime.sessions() as busy:
        await busy.connection()  # holds the connection: the committer waits for it
        first = asyncio.create_task(committer.run(0, 100))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(committer.run(i, 100)) for i in range(1, 4)]
        await asyncio.sleep(0)
        await busy.rollback()
    results = await asyncio.gather(first, *rest)
    await committer.close()
    assert batches == [[0, 1, 2, 3]]
    assert results == [0, 10, 20, 30]


async def test_a_failed_transaction_fails_its_whole_batch(runtime: Runtime) -> None:
    async def process(
        session: AsyncSession, items: Sequence[str]
    ) -> list[str | errors.DomainError]:
        await session.execute(sa.text("SELECT * FROM no_such_table"))
        return list(items)

    committer: Committer[str, str] = Committer(lambda: runtime.sessions, process)
    results = await asyncio.gather(*(committer.run(s, 1) for s in "abc"), return_exceptions=True)
    await committer.close()
    assert all(isinstance(r, sa.exc.DBAPIError) for r in results)


@pytest.mark.usefixtures("relay_pool", "loopback_credential")
async def test_concurrent_sessions_each_get_their_own_reply(
    ports: Ports, raw_clients: list[RawClient], client: httpx.AsyncClient, tenant: Tenant
) -> None:
    bad = message("From: shop@example.com", body="no subject\r\n")
    datas = [BASIC, BASIC, bad, BASIC, BASIC, BASIC]

    async def one(data: bytes, rcpt: str) -> tuple[int, str]:
        raw = await RawClient.connect(ports.starttls)
        raw_clients.append(raw)
        await raw.command("EHLO app.example.com")
        await raw.command("MAIL FROM:<shop@example.com>")
        await raw.command(f"RCPT TO:<{rcpt}>")
        await raw.command("DATA")
        await raw.send(data + b".\r\n")
        return await raw.reply()

    replies = await asyncio.gather(*(one(d, f"r{i}@example.org") for i, d in enumerate(datas)))
    assert [code for code, _ in replies] == [250, 250, 550, 250, 250, 250]
    ids = [queued_id(text) for code, text in replies if code == 250]
    assert len(set(ids)) == 5
    for i, message_id in zip((0, 1, 3, 4, 5), ids, strict=True):
        detail = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
        assert detail.json()["to"] == f"r{i}@example.org"


# -- SQLite's writer: the batch in one hand-off ----------------------------------------------

SCRATCH = sa.table("committer_scratch", sa.column("v"))
INSERT = sa.insert(SCRATCH).values(v=sa.bindparam("v"))


async def scratch(runtime: Runtime) -> SqliteWriter:
    if runtime.writer is None:
        pytest.skip("SQLite's writer thread")
    async with transaction(runtime.sessions) as session:
        await session.execute(sa.text("CREATE TABLE IF NOT EXISTS committer_scratch (v TEXT)"))
    return runtime.writer


async def stored(runtime: Runtime) -> list[str]:
    async with transaction(runtime.sessions) as session:
        return sorted(r[0] for r in (await session.execute(sa.select(SCRATCH.c.v))).all())


def builder(runtime: Runtime, batches: list[list[str]]) -> Build[str, str]:
    def build(items: Sequence[str]) -> tuple[Unit, list[str]]:
        batches.append(list(items))
        unit = Unit(runtime.engine.dialect)
        unit.execute(INSERT, [{"v": i} for i in items])
        return unit, [i.upper() for i in items]

    return build


async def unexpected(session: AsyncSession, items: Sequence[str]) -> list[str | errors.DomainError]:
    raise AssertionError("the ordinary path was not expected")


async def test_through_the_writer_what_arrives_while_the_lock_is_held_joins_the_batch(
    runtime: Runtime,
) -> None:
    writer = await scratch(runtime)
    batches: list[list[str]] = []
    committer: Committer[str, str] = Committer(
        lambda: runtime.sessions, unexpected, writer=lambda: writer, build=builder(runtime, batches)
    )
    other = create_engine(runtime.settings.db_url)  # another process holds the lock
    try:
        async with transaction(session_factory(other)) as holder:
            await holder.execute(sa.select(SCRATCH.c.v))  # BEGIN IMMEDIATE
            first = asyncio.create_task(committer.run("a", 1))
            await asyncio.sleep(0.05)
            rest = [asyncio.create_task(committer.run(v, 1)) for v in "bcd"]
            await asyncio.sleep(0.05)
            assert not first.done()
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    finally:
        await other.dispose()
    await committer.close()
    assert batches == [["a", "b", "c", "d"]]
    assert results == ["A", "B", "C", "D"]
    assert await stored(runtime) == ["a", "b", "c", "d"]


async def test_through_the_writer_a_failure_to_build_falls_back_to_the_ordinary_path(
    runtime: Runtime,
) -> None:
    writer = await scratch(runtime)

    def broken(items: Sequence[str]) -> tuple[Unit, list[str]]:
        raise KeyError("a bug in building the statements")

    async def ordinary(
        session: AsyncSession, items: Sequence[str]
    ) -> list[str | errors.DomainError]:
        await session.execute(INSERT, [{"v": i} for i in items])
        return [i * 2 for i in items]

    committer: Committer[str, str] = Committer(
        lambda: runtime.sessions, ordinary, writer=lambda: writer, build=broken
    )
    assert await asyncio.gather(committer.run("x", 1), committer.run("y", 1)) == ["xx", "yy"]
    await committer.close()
    assert await stored(runtime) == ["x", "y"]


async def test_cancelled_while_the_writer_waits_for_the_lock_stores_nothing_unanswered(
    runtime: Runtime,
) -> None:
    """At shutdown the group-commit task may be cancelled while the writer's thread waits
    for the lock: that write takes no batch, and what waited is cancelled, not stored
    without an answer."""
    writer = await scratch(runtime)
    batches: list[list[str]] = []
    committer: Committer[str, str] = Committer(
        lambda: runtime.sessions, unexpected, writer=lambda: writer, build=builder(runtime, batches)
    )
    other = create_engine(runtime.settings.db_url)
    try:
        async with transaction(session_factory(other)) as holder:
            await holder.execute(sa.select(SCRATCH.c.v))  # BEGIN IMMEDIATE
            first = asyncio.create_task(committer.run("a", 1))
            await asyncio.sleep(0.05)
            assert committer._task is not None
            committer._task.cancel()
            await asyncio.sleep(0.05)
            second = asyncio.create_task(committer.run("b", 1))  # queued after the cancel
            await asyncio.sleep(0.05)
        await committer.close()
        done = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
    finally:
        await other.dispose()
    assert all(isinstance(r, asyncio.CancelledError) for r in done)
    assert batches == []
    assert await stored(runtime) == []
