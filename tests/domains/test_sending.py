"""Mail from a verified domain over HTTP: DKIM-signed (checked by dkimpy against the
published keys), a VERP envelope sender on the return-path domain, the same signature
after a failover; a domain whose return path is not verified is dropped; an unverified
From is refused when the account requires a verified domain."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from postroute.delivery.worker import Worker
from postroute.runtime import Runtime
from tests.conftest import Tenant, make_tenant
from tests.delivery.conftest import add_pool, message, send
from tests.domains.conftest import add_domain, dkim_results, verified_domain, verify
from tests.support.dns import DnsServer
from tests.support.relay import RecordingRelay


async def test_a_verified_domains_mail_is_signed_with_a_verp_return_path(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker, dns: DnsServer
) -> None:
    await add_pool(client, tenant, relay.port)
    await verified_domain(client, tenant, dns, dkim_algorithms=["rsa", "ed25519"])
    attachment = {
        "filename": "Rechnung März.pdf",
        "content": base64.b64encode(b"%PDF-1.4 x").decode(),
    }
    sent = await send(client, tenant, subject="Grüße aus Köln ✓", attachments=[attachment])
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    message_id = sent["messages"][0]["id"]
    assert received.mail_from == f"bounces+{message_id}@bounces.example.com"
    assert dkim_results(received.data, dns) == [True, True]  # RSA and Ed25519
    detail = await message(client, tenant, message_id)
    assert detail["status"] == "sent"
    raw = (await client.get(f"/v1/messages/{message_id}/raw", headers=tenant.headers)).content
    assert raw == f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data


async def test_after_a_failover_only_the_pool_header_changed(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    dns: DnsServer,
    closed_port: int,
) -> None:
    first = await add_pool(client, tenant, closed_port, name="down", priority=1, is_default=True)
    second = await add_pool(client, tenant, relay.port, name="backup", priority=2)
    await verified_domain(client, tenant, dns)
    await send(client, tenant)
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.parsed()["X-Postroute-Pool-ID"] == second["id"]
    assert dkim_results(received.data, dns) == [True]
    assert first["id"] not in received.data.decode()


async def test_a_verified_domain_without_its_return_path_is_dropped_after_one_try(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker, dns: DnsServer
) -> None:
    await add_pool(client, tenant, relay.port)
    domain = await add_domain(client, tenant)
    dns.publish([r for r in domain["records"] if r["purpose"] == "dkim"])
    done = await verify(client, tenant, domain["id"])
    assert done["status"] == "verified" and done["return_path"]["verified"] is False
    sent = await send(client, tenant)
    await worker.drain()
    await worker.drain()
    assert relay.messages == []
    detail = await message(client, tenant, sent["messages"][0]["id"])
    assert detail["status"] == "dropped" and detail["attempts"] == 0
    dropped = [e for e in detail["events"] if e["type"] == "dropped"]
    assert dropped[0]["data"]["reason"] == "no verified return-path domain for example.com"


async def test_an_unverified_from_is_refused_when_the_account_requires_it(
    client: httpx.AsyncClient, runtime: Runtime, dns: DnsServer, relay: RecordingRelay
) -> None:
    strict = await make_tenant(runtime, "strict", require_verified_domain=True)
    other = await make_tenant(runtime, "other")
    await add_pool(client, strict, relay.port)
    await verified_domain(client, other, dns)  # another account's domain does not count
    refused = await client.post("/v1/send", json=body(), headers=strict.headers)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "domain_not_verified"
    assert (
        error["details"][0]["field"] == "from" and "example.com" in error["details"][0]["message"]
    )
    assert (await client.get("/v1/messages", headers=strict.headers)).json()["data"] == []
    # turned off: it sends (unsigned, as before)
    patched = await client.patch(
        "/v1/account", json={"require_verified_domain": False}, headers=strict.headers
    )
    assert patched.status_code == 200 and patched.json()["require_verified_domain"] is False
    assert (await client.post("/v1/send", json=body(), headers=strict.headers)).status_code == 202


async def test_new_accounts_require_a_verified_domain_and_their_own_counts(
    client: httpx.AsyncClient, runtime: Runtime, dns: DnsServer, relay: RecordingRelay
) -> None:
    strict = await make_tenant(runtime, "strict", require_verified_domain=True)
    account = (await client.get("/v1/account", headers=strict.headers)).json()
    assert account["require_verified_domain"] is True
    await add_pool(client, strict, relay.port)
    await verified_domain(client, strict, dns)
    assert (await client.post("/v1/send", json=body(), headers=strict.headers)).status_code == 202


def body(**over: Any) -> dict[str, Any]:
    return {
        "from": "shop@example.com",
        "to": ["a@example.org"],
        "subject": "Hi",
        "text": "x",
        **over,
    }


async def test_the_worker_signs_with_the_key_a_rotation_activated(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker, dns: DnsServer
) -> None:
    """The worker keeps an account's domains and keys while their stamp holds; a rotation
    changes it, and the next claim signs with the new key."""
    await add_pool(client, tenant, relay.port)
    done = await verified_domain(client, tenant, dns)
    url = f"/v1/domains/{done['id']}/dkim/rotate"
    rotated = (await client.post(url, headers=tenant.headers)).json()
    old, new = (k["selector"] for k in rotated["dkim"])
    for expected in (old, new):
        if expected == new:
            dns.publish([r for r in rotated["records"] if new in r["name"]])
            switched = await verify(client, tenant, done["id"])
            assert [k["state"] for k in switched["dkim"]] == ["retired", "active"]
        await send(client, tenant)
        await worker.drain()
        received = (await relay.wait_for_async(1 if expected == old else 2))[-1]
        assert f"s={expected};".encode() in received.data.replace(b" ", b"")
        assert dkim_results(received.data, dns) == [True]
