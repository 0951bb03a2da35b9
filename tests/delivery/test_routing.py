"""Pool choice, failover, circuit breaker, daily and rate limits, connection caps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from postroute.delivery.worker import Worker
from postroute.kit.clock import FakeClock
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message, send
from tests.support.fixtures import RelayFactory
from tests.support.relay import RecordingRelay


async def batch(client: httpx.AsyncClient, tenant: Tenant, n: int, **over: Any) -> list[str]:
    msgs = [
        {
            "from": "shop@example.com",
            "to": [f"u{i}@example.org"],
            "subject": "Hi",
            "text": "x",
            **over,
        }
        for i in range(n)
    ]
    reply = await client.post("/v1/send/batch", json={"messages": msgs}, headers=tenant.headers)
    assert reply.status_code == 202, reply.text
    return [m["messages"][0]["id"] for m in reply.json()["data"]]


async def pool_view(client: httpx.AsyncClient, tenant: Tenant, pool_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/smtp-pools/{pool_id}", headers=tenant.headers)
    return dict(reply.json())


# -- pool choice --------------------------------------------------------------------------


async def test_no_pool_named_goes_to_default(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    a, b = relay_factory(), relay_factory()
    await add_pool(client, tenant, a.port, priority=1)
    default = await add_pool(client, tenant, b.port, priority=50, is_default=True)
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    assert len(b.wait_for(1)) == 1 and a.messages == []
    assert (await message(client, tenant, sent["id"]))["pool_id"] == default["id"]


async def test_inactive_default_falls_back_to_priority_and_says_why(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    a, b, c = relay_factory(), relay_factory(), relay_factory()
    default = await add_pool(client, tenant, a.port, priority=1)
    await add_pool(client, tenant, b.port, priority=20)
    await add_pool(client, tenant, c.port, priority=10)
    await client.patch(
        f"/v1/smtp-pools/{default['id']}", json={"is_active": False}, headers=tenant.headers
    )
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    c.wait_for(1)
    assert a.messages == [] and b.messages == []
    detail = await message(client, tenant, sent["id"])
    assert "first active pool by priority" in detail["route_note"]


async def test_named_pool_wins_over_default(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    a, b = relay_factory(), relay_factory()
    await add_pool(client, tenant, a.port)
    await add_pool(client, tenant, b.port, name="transactional")
    await send(client, tenant, pool="transactional")
    await worker.drain()
    assert len(b.wait_for(1)) == 1 and a.messages == []


# -- failover -----------------------------------------------------------------------------


async def test_refused_connection_fails_over_and_records_both(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    closed_port: int,
    worker: Worker,
) -> None:
    b = relay_factory()
    pool_a = await add_pool(client, tenant, closed_port, priority=1)
    pool_b = await add_pool(client, tenant, b.port, priority=2)
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    b.wait_for(1)
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent" and detail["pool_id"] == pool_b["id"]
    tries = [(a["pool_id"], a["outcome"], a["error_code"]) for a in detail["delivery_attempts"]]
    assert tries == [
        (pool_a["id"], "relay_down", "smtp_connection_error"),
        (pool_b["id"], "sent", None),
    ]
    sent_event = next(e for e in detail["events"] if e["type"] == "sent")
    assert sent_event["data"]["pools_tried"] == [pool_a["id"], pool_b["id"]]


async def test_throttling_reply_fails_over_and_slows_the_pool(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    a = relay_factory(data_replies=["454 4.7.0 Throttling failure: Maximum sending rate exceeded."])
    b = relay_factory()
    pool_a = await add_pool(client, tenant, a.port, priority=1, rate_limit={"per_second": 14})
    pool_b = await add_pool(client, tenant, b.port, priority=2)
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    detail = await message(client, tenant, sent["id"])
    assert detail["pool_id"] == pool_b["id"] and detail["status"] == "sent"
    assert detail["delivery_attempts"][0]["error_code"] == "smtp_rate_limit"
    health = (await pool_view(client, tenant, pool_a["id"]))["health"]
    assert health["state"] == "degraded"
    assert health["effective_rate"] == 7.0  # halved


async def test_auth_failure_fails_over_opens_circuit_and_recovers(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    runtime: Runtime,
    clock: FakeClock,
) -> None:
    runtime.settings.breaker_failures = 3
    a = relay_factory(auth={"user": "rotated-password"})
    b = relay_factory()
    pool_a = await add_pool(
        client, tenant, a.port, priority=1, username="user", password="old", max_connections=1
    )
    await add_pool(client, tenant, b.port, priority=2)
    worker = Worker(runtime, owner="w")
    try:
        ids = await batch(client, tenant, 6)
        await worker.drain()
        b.wait_for(6)
        view = await pool_view(client, tenant, pool_a["id"])
        assert view["health"]["state"] == "down"
        assert view["health"]["last_error"].startswith("smtp_auth_error")
        sessions = a.connections
        assert sessions == 3  # one session at a time: the circuit opened after 3 failures

        for message_id in ids:
            detail = await message(client, tenant, message_id)
            assert detail["status"] == "sent"

        a.auth["user"] = "old"  # the relay is fixed
        await batch(client, tenant, 2)
        await worker.drain()
        assert a.connections == sessions  # still down: not even tried
        assert len(b.wait_for(8)) == 8

        clock.advance(runtime.settings.breaker_cooldown_seconds + 1)
        await worker.drain()  # due: one probe
        view = await pool_view(client, tenant, pool_a["id"])
        assert view["health"]["state"] == "healthy"
        await send(client, tenant)
        await worker.drain()
        assert len(a.wait_for(1)) == 1
    finally:
        await worker.close()


async def test_recipient_bounce_never_fails_over(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    a = relay_factory(rcpt_replies=["550 5.1.1 User unknown"])
    b = relay_factory()
    await add_pool(client, tenant, a.port, priority=1)
    await add_pool(client, tenant, b.port, priority=2)
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    assert (await message(client, tenant, sent["id"]))["status"] == "bounced"
    assert b.messages == []


async def test_recipient_4xx_retries_on_the_same_pool(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    clock: FakeClock,
) -> None:
    a = relay_factory(rcpt_replies=["450 4.2.0 Mailbox busy"])
    b = relay_factory()
    await add_pool(client, tenant, a.port, priority=1)
    await add_pool(client, tenant, b.port, priority=2)
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    clock.advance(60)
    await worker.drain()
    assert len(a.wait_for(1)) == 1 and b.messages == []
    assert (await message(client, tenant, sent["id"]))["attempts"] == 2


async def test_failover_off_waits_for_its_pool(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    closed_port: int,
    worker: Worker,
) -> None:
    b = relay_factory()
    await add_pool(client, tenant, closed_port, priority=1, failover=False)
    await add_pool(client, tenant, b.port, priority=2)
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "deferred"
    assert b.messages == []


# -- limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("failover", [True, False])
async def test_daily_limit_is_exact_and_resets_at_midnight(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    clock: FakeClock,
    failover: bool,
) -> None:
    clock.set(datetime(2026, 3, 1, 22, 0, tzinfo=UTC))
    a, b = relay_factory(), relay_factory()
    pool_a = await add_pool(client, tenant, a.port, priority=1, daily_limit=3, failover=failover)
    await add_pool(client, tenant, b.port, priority=2)
    ids = await batch(client, tenant, 5)
    await worker.drain()
    assert len(a.wait_for(3)) == 3
    usage = (await pool_view(client, tenant, pool_a["id"]))["usage"]
    assert usage["sent_today"] == 3 and usage["remaining_today"] == 0
    assert usage["throttled_today"] >= 2
    if failover:
        assert len(b.wait_for(2)) == 2
        return
    assert b.messages == []
    held = [await message(client, tenant, i) for i in ids]
    waiting = [m for m in held if m["status"] == "deferred"]
    assert len(waiting) == 2
    assert all(m["last_reply"].startswith("smtp_rate_limit") for m in waiting)
    assert all(m["attempts"] == 0 for m in waiting)

    clock.set(datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC))
    await worker.drain()
    assert len(a.wait_for(5)) == 5
    usage = (await pool_view(client, tenant, pool_a["id"]))["usage"]
    assert usage["sent_today"] == 2


async def test_rate_limit_holds_in_every_one_second_window(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port, rate_limit={"per_second": 5}, max_connections=4)
    await batch(client, tenant, 50)
    await worker.drain()
    times = sorted(m.received_monotonic for m in relay.wait_for(50, timeout=30))
    for i in range(len(times) - 5):
        assert times[i + 5] - times[i] >= 1.0, f"6 messages within {times[i + 5] - times[i]:.3f}s"


async def test_max_connections_one(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    relay = relay_factory(data_delay=0.01)
    await add_pool(client, tenant, relay.port, max_connections=1)
    await batch(client, tenant, 30)
    await worker.drain()
    relay.wait_for(30)
    assert relay.peak_sessions == 1


def test_next_midnight_is_utc() -> None:
    from postroute.delivery.dispatch import next_utc_midnight

    now = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    assert next_utc_midnight(now) == datetime(2026, 3, 2, tzinfo=UTC)
    assert next_utc_midnight(now) - now == timedelta(minutes=1)


async def test_deleted_named_pool_goes_to_default_and_says_why(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    a, b = relay_factory(), relay_factory()
    await add_pool(client, tenant, a.port)
    named = await add_pool(client, tenant, b.port, name="gone-soon")
    (sent,) = (await send(client, tenant, pool="gone-soon"))["messages"]
    await client.delete(f"/v1/smtp-pools/{named['id']}", headers=tenant.headers)
    await worker.drain()
    assert len(a.wait_for(1)) == 1 and b.messages == []
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent"
    assert "inactive or deleted" in detail["route_note"]
