"""API keys: Bearer authentication, revocation, last use, the error envelope."""

from __future__ import annotations

import asyncio

import httpx

from postroute.kit.clock import FakeClock
from postroute.kit.guard import MAX_WAITING, AuthGuard
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.kit.test_guard import Waits


async def test_missing_key_is_401_with_envelope(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/smtp-pools")
    assert reply.status_code == 401
    body = reply.json()
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["message"]
    assert body["error"]["details"] == []


async def test_unknown_key_is_401(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/smtp-pools", headers={"Authorization": "Bearer pr_live_nope"})
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "unauthorized"


async def test_wrong_scheme_is_401(client: httpx.AsyncClient, tenant: Tenant) -> None:
    reply = await client.get("/v1/smtp-pools", headers={"Authorization": f"Basic {tenant.key}"})
    assert reply.status_code == 401


async def test_key_works_and_records_last_use(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert (await client.get("/v1/smtp-pools", headers=tenant.headers)).status_code == 200
    keys = (await client.get("/v1/api-keys", headers=tenant.headers)).json()["data"]
    assert len(keys) == 1
    assert keys[0]["last_used_at"] is not None
    assert "key" not in keys[0] and "key_hash" not in keys[0]
    assert tenant.key not in str(keys)


async def test_created_key_shown_once_then_revoked_key_is_401(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await client.post("/v1/api-keys", json={"name": "ci"}, headers=tenant.headers)
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert new_key.startswith("pr_live_")
    listed = (await client.get("/v1/api-keys", headers=tenant.headers)).text
    assert new_key not in listed
    auth = {"Authorization": f"Bearer {new_key}"}
    assert (await client.get("/v1/smtp-pools", headers=auth)).status_code == 200
    revoked = await client.delete(f"/v1/api-keys/{created.json()['id']}", headers=tenant.headers)
    assert revoked.status_code == 204 and revoked.content == b""
    after = await client.get("/v1/smtp-pools", headers=auth)
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "unauthorized"


async def test_other_accounts_key_is_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    created = await client.post("/v1/api-keys", json={}, headers=tenant.headers)
    reply = await client.delete(
        f"/v1/api-keys/{created.json()['id']}", headers=other_tenant.headers
    )
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


async def test_keys_are_stored_as_hashes(runtime: Runtime, tenant: Tenant) -> None:
    import sqlalchemy as sa

    async with runtime.sessions() as session:
        rows = (await session.execute(sa.text("SELECT key_hash, prefix FROM api_keys"))).all()
    assert rows and all(tenant.key not in (h + p) for h, p in rows)


async def test_healthz_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/smtp-pools", "/v1/smtp-pools/{pool_id}", "/v1/smtp-pools/{pool_id}/test"):
        assert path in spec["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_unknown_route_has_envelope(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/nothing-here")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


async def test_database_errors_do_not_carry_bound_values(runtime: Runtime) -> None:
    import sqlalchemy as sa
    from sqlalchemy.exc import IntegrityError

    from postroute.models import MessageEvent

    secret = "pr_live_this-must-not-leak"
    async with runtime.sessions() as session:
        row = {"id": "evt_x", "account_id": secret, "message_id": "msg_missing"}
        row |= {"type": "queued", "created_at": runtime.clock.now(), "data": {}}
        try:
            await session.execute(sa.insert(MessageEvent), [row])
            await session.flush()
        except IntegrityError as exc:  # no such message: a foreign key violation
            assert secret not in str(exc)
        else:
            raise AssertionError("expected a foreign key violation")


async def test_a_key_is_marked_used_at_most_once_a_minute(
    client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
) -> None:
    async def last_used() -> str:
        keys = (await client.get("/v1/api-keys", headers=tenant.headers)).json()["data"]
        return str(keys[0]["last_used_at"])

    first = await last_used()
    clock.advance(30)
    assert await last_used() == first
    clock.advance(31)
    assert await last_used() != first


async def test_bearer_guesses_are_slowed_and_the_right_key_still_works(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    """HTTP Bearer keys share the SMTP AUTH limits: distinct wrong keys from one address
    slow its unknown keys down; a key that worked before is never slowed."""
    waits = Waits()
    s = runtime.settings
    runtime.guard = AuthGuard(
        per_source=2,
        global_limit=s.auth_failures_global,
        slow=0.5,
        slow_max=4.0,
        clock=runtime.clock,
        sleep=waits,
    )
    assert (await client.get("/v1/smtp-pools", headers=tenant.headers)).status_code == 200
    for i in range(4):
        wrong = {"Authorization": f"Bearer pr_live_guess{i}"}
        assert (await client.get("/v1/smtp-pools", headers=wrong)).status_code == 401
    assert waits.delays == [0.5, 1.0]
    assert (await client.get("/v1/smtp-pools", headers=tenant.headers)).status_code == 200
    assert waits.delays == [0.5, 1.0]


async def test_too_many_waiting_bearer_checks_are_429(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    waits = Waits()
    runtime.guard = AuthGuard(
        per_source=1, global_limit=1000, slow=1.0, slow_max=1.0, clock=runtime.clock, sleep=waits
    )
    wrong = {"Authorization": "Bearer pr_live_guess"}
    assert (await client.get("/v1/smtp-pools", headers=wrong)).status_code == 401
    waits.gate = asyncio.Event()
    pending = [
        asyncio.ensure_future(
            client.get("/v1/smtp-pools", headers={"Authorization": f"Bearer pr_live_{i}"})
        )
        for i in range(MAX_WAITING)
    ]
    while runtime.guard.waiting("127.0.0.1") < MAX_WAITING:  # one in the lane, the rest queue
        await asyncio.sleep(0.01)
    refused = await client.get("/v1/smtp-pools", headers=wrong)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    waits.gate.set()
    assert [r.status_code for r in await asyncio.gather(*pending)] == [401] * MAX_WAITING
