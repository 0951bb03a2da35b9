"""A worker that lost a message's lease while sending it (the lease expired and another
worker claimed the message) writes nothing of that message's outcome: no status, no
attempt, no event, and the delivery row stays the new owner's. On SQLite the outcome goes
through the writer thread (``SqliteWriter``), whose row-count guard must roll it back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from postroute.api.runtime import Runtime
from postroute.db import transaction
from postroute.delivery import repository as queue
from postroute.delivery.worker import Worker
from postroute.kit.clock import FakeClock
from postroute.models import Delivery
from tests.conftest import BACKEND, Tenant
from tests.delivery.conftest import add_pool, message, send
from tests.support.relay import Command, RecordingRelay

LEASE = timedelta(seconds=2)  # short, so the clock can pass it without a health rewrite
OTHER = "other-worker"


class HeldData:
    """A DATA reply script: the relay holds its reply until ``release`` is set. It runs in
    the relay's own thread, so blocking there holds only the relay."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, command: Command) -> str | None:
        self.entered.set()
        self.release.wait(10)
        return None  # the relay's usual 250


def spy_on_writer(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each hand-off to SQLite's writer returned (nothing recorded on PostgreSQL,
    which has no writer)."""
    results: list[bool] = []
    writer = runtime.writer
    if writer is None:
        assert BACKEND != "sqlite", "a SQLite file database has a writer"
        return results
    write = writer.write

    async def recording(build: Callable[[], Any]) -> bool:
        stored = await write(build)
        results.append(stored)
        return stored

    monkeypatch.setattr(writer, "write", recording)
    return results


async def warm_up(client: httpx.AsyncClient, tenant: Tenant, worker: Worker) -> None:
    """One message sent and written first: its batch writes the pool's health row (the
    ordinary path), so that the next batch's outcome can go through the writer."""
    (first,) = (await send(client, tenant, to=["first@example.org"]))["messages"]
    await worker.drain()
    assert (await message(client, tenant, first["id"]))["status"] == "sent"


async def while_data_is_held(
    relay: RecordingRelay, worker: Worker, meanwhile: Callable[[], Awaitable[None]]
) -> None:
    """Drain the worker; once the relay has the message's DATA, run ``meanwhile``, then
    let the relay answer and wait until the worker has written its outcome."""
    held = HeldData()
    relay.script(data=held)
    drain = asyncio.create_task(worker.drain())
    try:
        assert await asyncio.to_thread(held.entered.wait, 10), "DATA never reached the relay"
        assert not drain.done()
        await meanwhile()
    finally:
        held.release.set()
    await asyncio.wait_for(drain, 10)


async def delivery_rows(runtime: Runtime, message_id: str) -> list[tuple[Any, ...]]:
    async with transaction(runtime.sessions) as session:
        stmt = sa.select(Delivery.state, Delivery.lease_owner, Delivery.attempts).where(
            Delivery.message_id == message_id
        )
        return [tuple(r) for r in (await session.execute(stmt)).all()]


async def test_a_lost_lease_writes_nothing_of_the_outcome(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_pool(client, tenant, relay.port)
    worker.lease = LEASE
    await warm_up(client, tenant, worker)
    writes = spy_on_writer(runtime, monkeypatch)
    (sent,) = (await send(client, tenant))["messages"]

    async def take_over() -> None:  # the lease runs out; another worker claims the message
        clock.advance(LEASE.total_seconds() + 1)
        async with transaction(runtime.sessions) as session:
            claimed = await queue.claim(session, OTHER, clock.now(), timedelta(seconds=300), 10)
        assert [c.message_id for c in claimed] == [sent["id"]]

    await while_data_is_held(relay, worker, take_over)

    received = relay.wait_for(2)  # this worker did send it (the relay accepted it)
    assert received[-1].rcpt_tos == ("customer@example.org",)
    if BACKEND == "sqlite":  # the writer was tried and its lease guard wrote nothing
        assert writes == [False]
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "queued"
    assert detail["attempts"] == 0
    assert detail["last_reply"] is None
    assert detail["relay_queue_id"] is None
    assert [e["type"] for e in detail["events"]] == ["queued"]
    assert detail["delivery_attempts"] == []
    assert await delivery_rows(runtime, sent["id"]) == [("leased", OTHER, 0)]


async def test_a_lease_still_held_writes_the_outcome(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = await add_pool(client, tenant, relay.port)
    worker.lease = LEASE
    await warm_up(client, tenant, worker)
    writes = spy_on_writer(runtime, monkeypatch)
    (sent,) = (await send(client, tenant))["messages"]

    async def nothing() -> None:
        await asyncio.sleep(0)

    await while_data_is_held(relay, worker, nothing)

    received = relay.wait_for(2)[-1]
    if BACKEND == "sqlite":  # written in one hand-off to the writer
        assert writes == [True]
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent"
    assert detail["attempts"] == 1
    assert detail["relay_queue_id"] == received.queue_id
    assert [e["type"] for e in detail["events"]] == ["queued", "processed", "sent"]
    (attempt,) = detail["delivery_attempts"]
    assert attempt["outcome"] == "sent" and attempt["reply_code"] == 250
    assert attempt["pool_id"] == pool["id"]
    assert await delivery_rows(runtime, sent["id"]) == []
    pools = (await client.get("/v1/smtp-pools", headers=tenant.headers)).json()["data"]
    assert pools[0]["usage"]["sent_today"] == 2
