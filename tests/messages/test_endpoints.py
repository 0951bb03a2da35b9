"""POST /v1/send(/batch) and /v1/messages over HTTP: validation, idempotency, reading back."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from postroute.api.app import create_app
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, send


def fields(reply: httpx.Response) -> set[str]:
    return {d["field"] for d in reply.json()["error"]["details"]}


async def test_every_problem_reported_at_once(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await add_pool(client, tenant, 2525)
    body = {
        "from": "shop@example.com",
        "to": ["ok@example.org", "not-an-address", "x@example.org\r\nBcc: victim@example.net"],
        "subject": "   ",
        "headers": {"X-Campaign": "a\r\nBcc: victim@example.net"},
        "tags": ["a", "b", "c", "d", "e", "f"],
    }
    reply = await client.post("/v1/send", json=body, headers=tenant.headers)
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "validation_failed"
    got = fields(reply)
    assert {"to[1]", "to[2]", "subject", "tags"} <= {f.split(".")[0] for f in got}, got
    assert any(f.startswith("headers") for f in got), got
    assert any("html" in d["message"] or "text" in d["message"] for d in error["details"])


async def test_crlf_in_name_is_rejected(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await add_pool(client, tenant, 2525)
    reply = await client.post(
        "/v1/send",
        json={
            "from": {"email": "shop@example.com", "name": "Shop\r\nBcc: x@example.net"},
            "to": ["a@example.org"],
            "subject": "Hi",
            "text": "x",
        },
        headers=tenant.headers,
    )
    assert reply.status_code == 422
    assert any(f.startswith("from") for f in fields(reply))


async def test_unknown_pool_and_no_pool(client: httpx.AsyncClient, tenant: Tenant) -> None:
    reply = await send(client, tenant, expect=422)
    assert reply["error"]["code"] == "no_pool_configured"
    await add_pool(client, tenant, 2525)
    for alias in ("pool", "alias_id", "ippool"):
        reply = await send(client, tenant, expect=422, **{alias: "nope"})
        assert reply["error"]["code"] == "pool_not_found"
        assert reply["error"]["details"][0]["field"] == "pool"


async def test_named_pool_by_id_or_name(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await add_pool(client, tenant, 2525)
    second = await add_pool(client, tenant, 2526, name="backup")
    for ref in (second["id"], "backup"):
        sent = await send(client, tenant, pool=ref)
        detail = await client.get(
            f"/v1/messages/{sent['messages'][0]['id']}", headers=tenant.headers
        )
        assert detail.json()["pool_id"] == second["id"]
        assert detail.json()["requested_pool"] == ref


async def test_oversize_payload_is_413(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    await add_pool(client, tenant, 2525)
    runtime.settings.max_request_bytes = 100_000
    small = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://postroute.test"
    )
    big = base64.b64encode(b"x" * 200_000).decode()
    async with small:
        reply = await small.post(
            "/v1/send",
            json={
                "from": "a@example.com",
                "to": ["b@example.org"],
                "subject": "big",
                "text": "x",
                "attachments": [{"filename": "a.bin", "content": big}],
            },
            headers=tenant.headers,
        )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "payload_too_large"


async def test_batch_limits_and_paths(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await add_pool(client, tenant, 2525)
    good: dict[str, Any] = {
        "from": "a@example.com",
        "to": ["b@example.org"],
        "subject": "s",
        "text": "t",
    }
    reply = await client.post(
        "/v1/send/batch",
        json={"messages": [good, {**good, "subject": ""}, {**good, "pool": "nope"}]},
        headers=tenant.headers,
    )
    assert reply.status_code == 422
    assert "messages[1].subject" in fields(reply)
    too_many = await client.post(
        "/v1/send/batch", json={"messages": [good] * 501}, headers=tenant.headers
    )
    assert too_many.status_code == 422
    pool_problem = await client.post(
        "/v1/send/batch",
        json={"messages": [good, {**good, "pool": "nope"}]},
        headers=tenant.headers,
    )
    assert pool_problem.status_code == 422
    assert pool_problem.json()["error"]["code"] == "pool_not_found"
    assert fields(pool_problem) == {"messages[1].pool"}
    listed = await client.get("/v1/messages", headers=tenant.headers)
    assert listed.json()["data"] == []  # all or nothing


async def test_idempotency_key(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await add_pool(client, tenant, 2525)
    body = {"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}
    headers = {**tenant.headers, "Idempotency-Key": "order-1234"}
    first = await client.post("/v1/send", json=body, headers=headers)
    second = await client.post("/v1/send", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    listed = await client.get("/v1/messages", headers=tenant.headers)
    assert len(listed.json()["data"]) == 1
    changed = await client.post("/v1/send", json={**body, "subject": "other"}, headers=headers)
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_conflict"


async def test_idempotency_key_expires_after_24h(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    from postroute.kit.clock import FakeClock

    await add_pool(client, tenant, 2525)
    body = {"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}
    headers = {**tenant.headers, "Idempotency-Key": "k"}
    first = await client.post("/v1/send", json=body, headers=headers)
    assert isinstance(runtime.clock, FakeClock)
    runtime.clock.advance(24 * 3600 + 1)
    later = await client.post("/v1/send", json=body, headers=headers)
    assert later.json()["id"] != first.json()["id"]


async def test_idempotency_keys_are_per_account(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    body = {"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}
    for t in (tenant, other_tenant):
        await add_pool(client, t, 2525)
        reply = await client.post(
            "/v1/send", json=body, headers={**t.headers, "Idempotency-Key": "same"}
        )
        assert reply.status_code == 202
        assert "Idempotent-Replayed" not in reply.headers


async def test_list_filters_and_cursor(client: httpx.AsyncClient, tenant: Tenant) -> None:
    a = await add_pool(client, tenant, 2525)
    b = await add_pool(client, tenant, 2526, name="b")
    for i in range(5):
        await send(
            client, tenant, to=[f"user{i}@example.org"], tags=["receipt"] if i % 2 else ["reset"]
        )
    await send(client, tenant, to=["other@example.org"], pool="b", tags=["receipt"])

    async def ids(**params: Any) -> list[str]:
        reply = await client.get("/v1/messages", params=params, headers=tenant.headers)
        assert reply.status_code == 200, reply.text
        return [m["to"] for m in reply.json()["data"]]

    assert len(await ids()) == 6
    assert await ids(to="user3@example.org") == ["user3@example.org"]
    assert await ids(to="USER3@example.org") == ["user3@example.org"]
    assert sorted(await ids(tag="receipt")) == [
        "other@example.org",
        "user1@example.org",
        "user3@example.org",
    ]
    assert await ids(pool=b["id"]) == ["other@example.org"]
    assert len(await ids(pool=a["id"])) == 5
    assert len(await ids(status="queued")) == 6
    assert await ids(status="sent") == []
    assert len(await ids(since="2000-01-01T00:00:00Z")) == 6
    assert await ids(until="2000-01-01T00:00:00Z") == []

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/messages", params=params, headers=tenant.headers)).json()
        seen += [m["id"] for m in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 6
    assert seen == sorted(seen, reverse=True)  # newest first
    bad = await client.get("/v1/messages", params={"cursor": "%%%"}, headers=tenant.headers)
    assert bad.status_code == 422


async def test_messages_are_tenant_scoped(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await add_pool(client, tenant, 2525)
    mine = (await send(client, tenant))["messages"][0]["id"]
    for path in (f"/v1/messages/{mine}", f"/v1/messages/{mine}/raw"):
        reply = await client.get(path, headers=other_tenant.headers)
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"
        assert (await client.get(path, headers=tenant.headers)).status_code == 200
    assert (await client.get("/v1/messages", headers=other_tenant.headers)).json()["data"] == []
    other_pool = await add_pool(client, other_tenant, 2525, name="theirs")
    reply = await send(client, tenant, expect=422, pool=other_pool["id"])
    assert reply["error"]["code"] == "pool_not_found"


async def test_from_defaults_to_pool_from_email(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await add_pool(client, tenant, 2525, from_email="noreply@example.com")
    body = {"to": ["b@example.org"], "subject": "s", "text": "t"}
    reply = await client.post("/v1/send", json=body, headers=tenant.headers)
    assert reply.status_code == 202, reply.text
    msg_id = reply.json()["messages"][0]["id"]
    detail = (await client.get(f"/v1/messages/{msg_id}", headers=tenant.headers)).json()
    assert detail["from"] == "noreply@example.com"
    assert reply.json()["messages"][0]["message_id"].endswith("@example.com>")
