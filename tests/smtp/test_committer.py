"""Group commit: sessions arriving during a commit share the next write; a refusal stays
with its item; a failed write fails every item of its batch; a stale write (a pool
changed) plans its items again. On SQLite the batch is taken in the writer's thread once
the lock is held. And through the listeners: concurrent sessions each get their own
reply."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import httpx
import pytest
import sqlalchemy as sa

from postroute import errors
from postroute.db import create_engine, session_factory, transaction
from postroute.db.changes import Changes
from postroute.db.sqlite import writer as sqlite_writer
from postroute.db.store import Prepared, Store
from postroute.runtime import Runtime
from postroute.smtp.committer import Committer, Replan
from tests.conftest import Tenant
from tests.smtp.conftest import BASIC, Ports, RawClient, message, queued_id

SCRATCH = sa.table("committer_scratch", sa.column("v"))
INSERT = sa.insert(SCRATCH).values(v=sa.bindparam("v"))
MISSING = sa.insert(sa.table("no_such_table", sa.column("v"))).values(v=sa.bindparam("v"))


@pytest.fixture
async def scratch(runtime: Runtime) -> None:
    async with transaction(runtime.sessions) as session:
        await session.execute(sa.text("CREATE TABLE IF NOT EXISTS committer_scratch (v TEXT)"))
        await session.execute(sa.delete(SCRATCH))  # PostgreSQL keeps it between tests


async def stored(runtime: Runtime) -> list[str]:
    async with transaction(runtime.sessions) as session:
        return sorted(r[0] for r in (await session.execute(sa.select(SCRATCH.c.v))).all())


class Recorded:
    """The runtime's store, noting each batch its commits take; with ``hold_first`` the
    first commit returns only once ``release`` is set."""

    def __init__(self, runtime: Runtime, *, hold_first: bool = False) -> None:
        self.runtime = runtime
        self.batches: list[list[str]] = []
        self.started, self.release = asyncio.Event(), asyncio.Event()
        if not hold_first:
            self.release.set()

    @property
    def store(self) -> Store:
        return self.runtime.store

    def prepare(self, changes: Changes) -> Prepared:
        return self.store.prepare(changes)

    async def commit(self, build: Callable[[], Sequence[Prepared]]) -> int | None:
        def noted() -> Sequence[Prepared]:
            self.batches.append([])
            parts = build()
            if not self.batches[-1]:
                self.batches.pop()
            return parts

        ticket = await self.store.commit(noted)
        self.started.set()  # a slow commit: what arrives meanwhile waits for the next
        await self.release.wait()
        return ticket

    async def sync(self, ticket: int) -> None:
        await self.store.sync(ticket)

    def write(self, item: str, stmt: sa.Insert = INSERT) -> Prepared:
        self.batches[-1].append(item)
        changes = Changes()
        changes.execute(stmt, [{"v": item}])
        return self.store.prepare(changes)


async def no_replan(items: Sequence[str]) -> list[str | errors.DomainError]:
    raise AssertionError("no write was expected to be stale")


def committer(
    store: Recorded, write: Callable[[str], Prepared] | None = None, replan: Replan[str] = no_replan
) -> Committer[str, str]:
    return Committer(lambda: store, write or store.write, str.upper, replan)  # type: ignore[arg-type, return-value]


@pytest.mark.usefixtures("scratch")
async def test_items_arriving_during_a_commit_share_the_next_one(runtime: Runtime) -> None:
    store = Recorded(runtime, hold_first=True)
    c = committer(store)
    first = asyncio.create_task(c.run("a", 100))
    await store.started.wait()
    rest = [asyncio.create_task(c.run(v, 100)) for v in "bcde"]
    await asyncio.sleep(0)
    store.release.set()
    results = await asyncio.gather(first, *rest)
    await c.close()
    assert store.batches == [["a"], ["b", "c", "d", "e"]]
    assert results == ["A", "B", "C", "D", "E"]
    assert await stored(runtime) == ["a", "b", "c", "d", "e"]


@pytest.mark.usefixtures("scratch")
async def test_a_failed_write_fails_its_whole_batch(runtime: Runtime) -> None:
    store = Recorded(runtime)
    c = committer(store, lambda item: store.write(item, MISSING))
    results = await asyncio.gather(*(c.run(v, 1) for v in "abc"), return_exceptions=True)
    await c.close()
    assert all(isinstance(r, sa.exc.DBAPIError) for r in results)
    assert await stored(runtime) == []


@pytest.mark.usefixtures("scratch")
async def test_a_stale_write_plans_its_items_again(runtime: Runtime) -> None:
    """A guard that does not hold (a pool changed since): nothing of the batch is written;
    each item is planned again, and the refused one gets its error."""
    store = Recorded(runtime)
    guarded = {"a", "b"}

    def write(item: str) -> Prepared:
        store.batches[-1].append(item)
        changes = Changes()
        if item in guarded:  # planned against a value the database no longer has
            changes.guard(sa.select(sa.literal(1)), [(2,)])
        changes.execute(INSERT, [{"v": item}])
        return store.prepare(changes)

    async def replan(items: Sequence[str]) -> list[str | errors.DomainError]:
        guarded.clear()
        return [errors.ValidationFailed("refused now") if i == "b" else i for i in items]

    c = committer(store, write, replan)
    results = await asyncio.gather(*(c.run(v, 1) for v in "abc"), return_exceptions=True)
    await c.close()
    assert store.batches == [["a", "b", "c"], ["a", "c"]]
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], errors.ValidationFailed)
    assert await stored(runtime) == ["a", "c"]


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


# -- SQLite: the batch taken in the writer's thread, once it holds the lock --------------


@pytest.mark.usefixtures("scratch")
async def test_what_arrives_while_another_process_holds_the_lock_joins_the_batch(
    runtime: Runtime,
) -> None:
    if runtime.writer is None:
        pytest.skip("SQLite: the writer waits for the lock another process holds")
    store = Recorded(runtime)
    c = committer(store)
    other = create_engine(runtime.settings.db_url)  # another process holds the lock
    try:
        async with transaction(session_factory(other)) as holder:
            await holder.execute(sa.select(SCRATCH.c.v))  # BEGIN IMMEDIATE
            first = asyncio.create_task(c.run("a", 1))
            await asyncio.sleep(0.05)
            rest = [asyncio.create_task(c.run(v, 1)) for v in "bcd"]
            await asyncio.sleep(0.05)
            assert not first.done()
        results = await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    finally:
        await other.dispose()
    await c.close()
    assert store.batches == [["a", "b", "c", "d"]]
    assert results == ["A", "B", "C", "D"]
    assert await stored(runtime) == ["a", "b", "c", "d"]


@pytest.mark.usefixtures("scratch")
async def test_cancelled_while_the_writer_waits_for_the_lock_stores_nothing_unanswered(
    runtime: Runtime,
) -> None:
    """At shutdown the group-commit task may be cancelled while the writer's thread waits
    for the lock: that write takes no batch, and what waited is cancelled, not stored
    without an answer."""
    if runtime.writer is None:
        pytest.skip("SQLite: the writer waits for the lock another process holds")
    store = Recorded(runtime)
    c = committer(store)
    other = create_engine(runtime.settings.db_url)
    try:
        async with transaction(session_factory(other)) as holder:
            await holder.execute(sa.select(SCRATCH.c.v))  # BEGIN IMMEDIATE
            first = asyncio.create_task(c.run("a", 1))
            await asyncio.sleep(0.05)
            assert c._task is not None
            c._task.cancel()
            await asyncio.sleep(0.05)
            second = asyncio.create_task(c.run("b", 1))  # queued after the cancel
            await asyncio.sleep(0.05)
        await c.close()
        done = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
    finally:
        await other.dispose()
    assert all(isinstance(r, asyncio.CancelledError) for r in done)
    assert store.batches == []
    assert await stored(runtime) == []


@pytest.mark.usefixtures("scratch")
async def test_a_failed_fsync_answers_no_message_as_stored(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed, but the WAL's fsync failed: not known to be on disk, so no session gets
    its 250 (the error instead)."""
    if runtime.writer is None:
        pytest.skip("SQLite: the writer fsyncs the WAL itself")

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_writer, "fsync_wal", broken)
    c = committer(Recorded(runtime))
    results = await asyncio.gather(c.run("m", 1), c.run("n", 1), return_exceptions=True)
    await c.close()
    assert all(isinstance(r, OSError) and "Input/output" in str(r) for r in results)
