"""A relay that got the content and closed the session without its final reply may have
taken the message: the attempt is recorded as ``unknown_outcome``, the message does not
fail over (two upstreams would both have it), and it is retried later on the same pool.
(A session lost before the content went out still fails over: test_routing.py.)"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from postroute.delivery.worker import Worker
from postroute.kit.clock import FakeClock
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message, send
from tests.support.fixtures import RelayFactory
from tests.support.relay import Command, RecordingRelay


def close_without_reply(relay: RecordingRelay) -> Callable[[Command], str | None]:
    """A DATA script: the relay has the whole content, then drops every connection
    before its reply goes out (it runs on the relay's loop: aborting is safe there)."""

    def script(command: Command) -> str | None:
        assert command.data
        with relay._lock:
            transports = list(relay._transports)
        for transport in transports:
            transport.abort()
        return None  # recorded as received; the 250 never reaches the client

    return script


async def test_content_sent_without_a_reply_is_retried_on_the_same_pool_not_failed_over(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    clock: FakeClock,
) -> None:
    a, b = relay_factory(), relay_factory()
    a.script(data=close_without_reply(a))
    pool_a = await add_pool(client, tenant, a.port, priority=1)
    await add_pool(client, tenant, b.port, priority=2)
    (sent,) = (await send(client, tenant))["messages"]

    await worker.drain()

    assert len(a.messages) == 1 and b.messages == []  # one upstream got it, no failover
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "deferred" and detail["attempts"] == 1
    (attempt,) = detail["delivery_attempts"]
    assert attempt["pool_id"] == pool_a["id"] and attempt["outcome"] == "unknown_outcome"
    assert attempt["error_code"] == "smtp_connection_error" and attempt["reply_code"] is None
    assert "may have taken the message" in attempt["reply_text"]
    deferred = detail["events"][-1]
    assert deferred["type"] == "deferred"
    assert deferred["data"]["error_code"] == "smtp_connection_error"
    assert "may have taken the message" in detail["last_reply"]

    a.script(data=[])  # the relay answers again
    clock.advance(59)
    await worker.drain()
    assert len(a.messages) == 1  # not before the retry delay (attempt 1 waits 60 s)
    clock.advance(2)
    await worker.drain()

    assert len(a.wait_for(2)) == 2 and b.messages == []  # the duplicate is in the history
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent" and detail["pool_id"] == pool_a["id"]
    tries = [(t["number"], t["pool_id"], t["outcome"]) for t in detail["delivery_attempts"]]
    assert tries == [(1, pool_a["id"], "unknown_outcome"), (2, pool_a["id"], "sent")]
    pools = (await client.get("/v1/smtp-pools", headers=tenant.headers)).json()["data"]
    used = {p["id"]: p["usage"]["sent_today"] for p in pools}
    assert used[pool_a["id"]] == 2  # the relay may have counted both


async def test_a_message_that_failed_over_is_retried_where_its_content_went(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    clock: FakeClock,
) -> None:
    """A down → failover to B → B may have it: the retry goes to B again, not back to
    A (the pool asked for), even though A answers by then."""
    a, b = relay_factory(reject_connections=True), relay_factory()
    b.script(data=close_without_reply(b))
    pool_a = await add_pool(client, tenant, a.port, priority=1)
    pool_b = await add_pool(client, tenant, b.port, priority=2)
    (sent,) = (await send(client, tenant))["messages"]

    await worker.drain()

    assert a.messages == [] and len(b.messages) == 1
    detail = await message(client, tenant, sent["id"])
    tries = [(t["pool_id"], t["outcome"]) for t in detail["delivery_attempts"]]
    assert tries == [(pool_a["id"], "relay_down"), (pool_b["id"], "unknown_outcome")]
    assert detail["status"] == "deferred"

    a.reject_connections = False
    b.script(data=[])
    clock.advance(61)
    await worker.drain()

    assert a.messages == [] and len(b.wait_for(2)) == 2
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent" and detail["pool_id"] == pool_b["id"]
    assert [t["outcome"] for t in detail["delivery_attempts"]] == [
        "relay_down",
        "unknown_outcome",
        "sent",
    ]
