"""The suppression list on the way out: a send to a suppressed address is recorded
``dropped`` (HTTP: ``recipient_suppressed`` in the reply; SMTP: 550 when no recipient
is left, else the 250 says which); mail queued before the address was suppressed is
dropped at delivery; a relay's recipient-level hard bounce suppresses, a policy reply
does not; an expired entry no longer blocks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from postroute.delivery.worker import Worker
from postroute.kit.clock import FakeClock
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message, send
from tests.support.fixtures import RelayFactory
from tests.support.relay import RecordingRelay


async def suppress(client: httpx.AsyncClient, tenant: Tenant, email: str, **over: Any) -> None:
    body = {"email": email, **over}
    reply = await client.post("/v1/suppressions", json=body, headers=tenant.headers)
    assert reply.status_code == 201, reply.text


async def entries(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    reply = await client.get("/v1/suppressions", headers=tenant.headers)
    return list(reply.json()["data"])


async def test_a_send_to_a_suppressed_address_is_recorded_dropped(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port)
    await send(client, tenant, to=["first@example.org"])  # the account's state is read
    await suppress(client, tenant, "Gone@Example.org")
    (dropped,) = (await send(client, tenant, to=["Gone@EXAMPLE.org"]))["messages"]
    (kept,) = (await send(client, tenant, to=["gone@example.org"]))["messages"]
    assert kept.get("error") is None  # the local part is exact: gone@ is another mailbox
    assert dropped["error"] == "recipient_suppressed"
    assert dropped["suppression_reason"] == "manual"
    detail = await message(client, tenant, dropped["id"])
    assert detail["status"] == "dropped" and detail["attempts"] == 0
    assert [e["type"] for e in detail["events"]] == ["dropped"]
    assert detail["events"][0]["data"] == {
        "reason": "suppressed",
        "suppression_reason": "manual",
        "source": "api",
    }
    await worker.drain()
    received = await relay.wait_for_async(2)
    assert sorted(r.rcpt_tos[0] for r in received) == ["first@example.org", "gone@example.org"]


async def test_mail_queued_before_the_address_was_suppressed_is_dropped_at_delivery(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port)
    sent = await send(client, tenant, to=["late@example.org"])
    await suppress(client, tenant, "late@example.org")
    await worker.drain()
    assert relay.messages == []
    detail = await message(client, tenant, sent["messages"][0]["id"])
    assert detail["status"] == "dropped" and detail["attempts"] == 0
    dropped = [e for e in detail["events"] if e["type"] == "dropped"]
    assert dropped[0]["data"] == {"reason": "suppressed", "suppression_reason": "manual"}
    assert detail["last_reply"] == "suppressed: manual"


async def test_a_hard_bounce_suppresses_the_address_for_the_set_days(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    clock: FakeClock,
) -> None:
    def reply(command: Any) -> str | None:
        if command.verb == "RCPT" and "unknown@" in str(command.address):
            return "550 5.1.1 <unknown@example.org>: Recipient address rejected: User unknown"
        if command.verb == "RCPT" and "policy@" in str(command.address):
            return "550 5.7.1 Message rejected due to local policy"
        return None

    relay = relay_factory(rcpt_replies=reply)
    await add_pool(client, tenant, relay.port)
    sent = await send(client, tenant, to=["unknown@example.org", "policy@example.org"])
    await worker.drain()
    (entry,) = await entries(client, tenant)
    hard = sent["messages"][0]["id"]
    assert (entry["email"], entry["reason"], entry["source"]) == (
        "unknown@example.org",
        "hard_bounce",
        hard,
    )
    expires = clock.now() + timedelta(days=90)
    assert entry["expires_at"].startswith(expires.isoformat()[:16])
    bounced = [e for e in (await message(client, tenant, hard))["events"] if e["type"] == "bounced"]
    assert bounced[0]["data"]["status"] == "5.1.1" and bounced[0]["data"]["suppressed"] is True
    policy = await message(client, tenant, sent["messages"][1]["id"])
    assert policy["status"] == "bounced"
    assert [e["data"]["suppressed"] for e in policy["events"] if e["type"] == "bounced"] == [False]
    again = await send(client, tenant, to=["unknown@example.org"])
    assert again["messages"][0]["error"] == "recipient_suppressed"
    assert again["messages"][0]["suppression_reason"] == "hard_bounce"


async def test_an_expired_entry_no_longer_blocks(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    clock: FakeClock,
) -> None:
    await add_pool(client, tenant, relay.port)
    soon = (clock.now() + timedelta(hours=1)).isoformat()
    await suppress(client, tenant, "back@example.org", expires_at=soon)
    blocked = await send(client, tenant, to=["back@example.org"])
    assert blocked["messages"][0]["error"] == "recipient_suppressed"
    clock.advance(3601)
    sent = await send(client, tenant, to=["back@example.org"])
    assert sent["messages"][0].get("error") is None
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.rcpt_tos == ("back@example.org",)
    (entry,) = await entries(client, tenant)
    assert entry["active"] is False  # still listed, no longer blocking
