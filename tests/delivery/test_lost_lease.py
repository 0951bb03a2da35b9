"""A worker that lost a message's lease while sending it (the lease expired and another
worker claimed the message) writes nothing of that message's outcome: no status, no
attempt, no event, and the delivery row stays the new owner's. On SQLite the outcome goes
through the writer thread (``SqliteWriter``), whose row-count guard must roll it back."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from postroute.db import transaction
from postroute.db.changes import Changes, Stale
from postroute.delivery import repository as queue
from postroute.delivery.worker import Worker
from postroute.kit.clock import FakeClock
from postroute.models import Delivery
from postroute.runtime import Runtime
from tests.conftest import Tenant
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


def spy_on_store(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What became of each write of described changes: "stored", or "stale" (a guard did
    not hold: nothing written). The same path on every backend."""
    results: list[str] = []
    write = runtime.store.write

    async def recording(changes: Changes) -> None:
        try:
            await write(changes)
        except Stale:
            results.append("stale")
            raise
        results.append("stored")

    monkeypatch.setattr(runtime.store, "write", recording)
    return results


async def warm_up(client: httpx.AsyncClient, tenant: Tenant, worker: Worker) -> None:
    """One message sent and written first (its batch writes the pool's health row)."""
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
    writes = spy_on_store(runtime, monkeypatch)
    (sent,) = (await send(client, tenant))["messages"]

    async def take_over() -> None:  # the lease runs out; another worker claims the message
        clock.advance(LEASE.total_seconds() + 1)
        async with transaction(runtime.sessions) as session:
            claimed = await queue.claim(session, OTHER, clock.now(), timedelta(seconds=300), 10)
        assert [c.message_id for c in claimed] == [sent["id"]]

    await while_data_is_held(relay, worker, take_over)

    received = relay.wait_for(2)  # this worker did send it (the relay accepted it)
    assert received[-1].rcpt_tos == ("customer@example.org",)
    # the lease guard wrote nothing; then the rest (the pool's usage) without the message
    assert writes == ["stale", "stored"]
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "queued"
    assert detail["attempts"] == 0
    assert detail["last_reply"] is None
    assert detail["relay_queue_id"] is None
    assert [e["type"] for e in detail["events"]] == ["queued"]
    assert detail["delivery_attempts"] == []
    # the new owner counts the attempt in flight when it took the lease (and records it)
    assert await delivery_rows(runtime, sent["id"]) == [("leased", OTHER, 1)]


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
    writes = spy_on_store(runtime, monkeypatch)
    (sent,) = (await send(client, tenant))["messages"]

    async def nothing() -> None:
        await asyncio.sleep(0)

    await while_data_is_held(relay, worker, nothing)

    received = relay.wait_for(2)[-1]
    assert writes == ["stored"]  # one write (on SQLite one hand-off to the writer)
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


# -- the attempt of a worker that stopped is recorded by the next one ---------------------


async def stopped_while_sending(relay: RecordingRelay, runtime: Runtime) -> None:
    """A worker sends the message (the relay takes it) and stops before writing anything,
    as after ``kill -9``: its lease is left to expire."""
    crashed = Worker(runtime, owner="crashed-worker")
    crashed.lease = LEASE
    held = HeldData()
    relay.script(data=held)
    drain = asyncio.create_task(crashed.drain())
    try:
        assert await asyncio.to_thread(held.entered.wait, 10), "DATA never reached the relay"
        drain.cancel()  # nothing of this worker records anything from now on
        with contextlib.suppress(asyncio.CancelledError):
            await drain
    finally:
        held.release.set()
    await crashed.close()
    relay.script(data=[])


def tries(detail: dict[str, Any]) -> list[tuple[Any, ...]]:
    keys = ("number", "pool_id", "outcome", "error_code")
    return [tuple(t[k] for k in keys) for t in detail["delivery_attempts"]]


@pytest.mark.parametrize("warm", [True, False], ids=["health-written", "health-due"])
async def test_an_expired_lease_records_the_attempt_it_had_in_flight(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    warm: bool,
) -> None:
    """The same rows whether the batch also writes the pool's health row or not."""
    pool = await add_pool(client, tenant, relay.port)
    if warm:
        await warm_up(client, tenant, worker)
    writes = spy_on_store(runtime, monkeypatch)
    (sent,) = (await send(client, tenant))["messages"]
    await stopped_while_sending(relay, runtime)
    first = len(relay.wait_for(1 + warm))

    clock.advance(LEASE.total_seconds() + 1)
    await worker.drain()

    assert len(relay.wait_for(first + 1)) == first + 1  # sent twice: both in the history
    assert writes == ["stored"]
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent" and detail["attempts"] == 2
    assert tries(detail) == [
        (1, None, "unknown_outcome", "lease_lost"),
        (2, pool["id"], "sent", None),
    ]
    lost = detail["delivery_attempts"][0]["reply_text"]
    assert "stopped before recording an outcome" in lost and "may have been sent" in lost
    assert [e["type"] for e in detail["events"]] == ["queued", "processed", "sent"]
    assert await delivery_rows(runtime, sent["id"]) == []


async def test_an_expired_lease_is_recorded_when_the_message_must_wait(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    clock: FakeClock,
) -> None:
    pool = await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    await stopped_while_sending(relay, runtime)
    body = {"is_active": False}  # no pool can take it: it waits, without an attempt
    reply = await client.patch(f"/v1/smtp-pools/{pool['id']}", json=body, headers=tenant.headers)
    assert reply.status_code == 200, reply.text

    clock.advance(LEASE.total_seconds() + 1)
    await worker.drain()

    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "deferred" and detail["attempts"] == 1
    assert tries(detail) == [(1, None, "unknown_outcome", "lease_lost")]
    assert [e["type"] for e in detail["events"]] == ["queued", "processed", "deferred"]
    assert await delivery_rows(runtime, sent["id"]) == [("queued", None, 1)]


async def test_a_send_cut_off_by_stop_is_recorded_by_the_next_worker(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
) -> None:
    """``stop()`` whose grace period ends while a message is being sent: the message is
    due again at once, and the next worker records the attempt that may have been sent."""
    pool = await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    stopping = Worker(runtime, owner="stopping-worker")
    held = HeldData()
    relay.script(data=held)
    running = asyncio.create_task(stopping.run())
    try:
        assert await asyncio.to_thread(held.entered.wait, 10), "DATA never reached the relay"
        await stopping.stop(grace=0.1)
        await asyncio.wait_for(running, 10)
    finally:
        held.release.set()
    relay.script(data=[])

    await worker.drain()

    assert len(relay.wait_for(2)) == 2
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent"
    assert tries(detail) == [
        (1, None, "unknown_outcome", "lease_lost"),
        (2, pool["id"], "sent", None),
    ]
