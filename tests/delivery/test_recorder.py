"""Outcomes written as one write per batch (on SQLite one hand-off to the writer thread,
on PostgreSQL a transaction: the same statements) read back as expected: deferred
messages go back to the queue, bounced ones leave it."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
import sqlalchemy as sa

from postroute.db import transaction
from postroute.delivery.worker import Worker
from postroute.kit.clock import FakeClock
from postroute.models import Delivery
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message, send
from tests.delivery.test_lost_lease import spy_on_store, warm_up
from tests.support.relay import RecordingRelay


async def queue_row(runtime: Runtime, message_id: str) -> tuple[str, str | None, int, datetime]:
    async with transaction(runtime.sessions) as session:
        stmt = sa.select(
            Delivery.state, Delivery.lease_owner, Delivery.attempts, Delivery.next_attempt_at
        ).where(Delivery.message_id == message_id)
        state, owner, attempts, due = (await session.execute(stmt)).one()
    return state, owner, attempts, due


async def test_a_deferral_goes_back_to_the_queue(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_pool(client, tenant, relay.port)
    await warm_up(client, tenant, worker)
    writes = spy_on_store(runtime, monkeypatch)
    relay.script(data=["451 4.3.0 try again later"])
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()

    assert writes == ["stored"]
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "deferred"
    assert detail["attempts"] == 1
    assert detail["last_reply"].startswith("451 4.3.0 try again later")
    deferred = next(e for e in detail["events"] if e["type"] == "deferred")
    state, owner, attempts, due = await queue_row(runtime, sent["id"])
    assert (state, owner, attempts) == ("queued", None, 1)
    assert due > clock.now()
    assert deferred["data"]["next_attempt_at"] == due.isoformat()

    clock.advance((due - clock.now()).total_seconds() + 1)
    await worker.drain()
    assert (await message(client, tenant, sent["id"]))["status"] == "sent"


async def test_a_bounce_leaves_the_queue(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_pool(client, tenant, relay.port)
    await warm_up(client, tenant, worker)
    writes = spy_on_store(runtime, monkeypatch)
    relay.script(data=["550 5.1.1 no such user"])
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()

    assert writes == ["stored"]
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "bounced"
    assert [e["type"] for e in detail["events"]] == ["queued", "processed", "bounced"]
    async with transaction(runtime.sessions) as session:
        left = await session.scalar(
            sa.select(sa.func.count())
            .select_from(Delivery)
            .where(Delivery.message_id == sent["id"])
        )
    assert left == 0
