"""/v1/smtp-pools: CRUD, validation, one default, secrets never shown, tenant isolation,
and the connection test against real relays on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from postroute.runtime import Runtime
from tests.conftest import BACKEND, Tenant
from tests.support.fixtures import RelayFactory
from tests.support.relay import SilentServer

SECRET = "s3cr3t-relay-passw0rd-XYZ"


def pool_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "ses",
        "host": "email-smtp.eu-west-1.amazonaws.com",
        "port": 587,
        "username": "AKIAEXAMPLE",
        "password": SECRET,
        "encryption": "tls",
    }
    body.update(over)
    return body


async def create(client: httpx.AsyncClient, tenant: Tenant, **over: Any) -> dict[str, Any]:
    reply = await client.post("/v1/smtp-pools", json=pool_body(**over), headers=tenant.headers)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def test_crud_round_trip(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pool = await create(client, tenant, daily_limit=2000, rate_limit={"per_second": 14})
    assert pool["id"].startswith("smtp_")
    assert pool["is_default"] is True  # the first pool becomes the default
    assert pool["max_connections"] == 4
    assert pool["usage"] == {"sent_today": 0, "remaining_today": 2000, "throttled_today": 0}
    assert pool["health"]["state"] == "healthy"
    assert pool["rate_limit"] == {"per_second": 14, "per_minute": None}
    assert pool["password_set"] is True

    got = await client.get(f"/v1/smtp-pools/{pool['id']}", headers=tenant.headers)
    assert got.status_code == 200 and got.json()["name"] == "ses"

    patched = await client.patch(
        f"/v1/smtp-pools/{pool['id']}",
        json={"port": 2587, "rate_limit": {"per_minute": 120}, "daily_limit": None},
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["port"] == 2587
    assert patched.json()["rate_limit"] == {"per_second": None, "per_minute": 120}
    assert patched.json()["usage"]["remaining_today"] is None

    listed = await client.get("/v1/smtp-pools", headers=tenant.headers)
    assert [p["id"] for p in listed.json()["data"]] == [pool["id"]]

    deleted = await client.delete(f"/v1/smtp-pools/{pool['id']}", headers=tenant.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/smtp-pools/{pool['id']}", headers=tenant.headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


async def test_one_default_per_account(client: httpx.AsyncClient, tenant: Tenant) -> None:
    first = await create(client, tenant, name="a")
    second = await create(client, tenant, name="b")
    assert first["is_default"] and not second["is_default"]
    third = await create(client, tenant, name="c", is_default=True)
    assert third["is_default"]
    patched = await client.patch(
        f"/v1/smtp-pools/{second['id']}", json={"is_default": True}, headers=tenant.headers
    )
    assert patched.json()["is_default"] is True
    pools = (await client.get("/v1/smtp-pools", headers=tenant.headers)).json()["data"]
    assert [p["name"] for p in pools if p["is_default"]] == ["b"]


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"encryption": "starttls"}, "encryption"),
        ({"host": None}, "host"),
        ({"host": "bad host\r\nX: y"}, "host"),
        ({"rate_limit": {"per_second": 1, "per_minute": 2}}, "rate_limit"),
        ({"rate_limit": {"per_hour": 3}}, "rate_limit.per_hour"),
        ({"max_connections": 0}, "max_connections"),
        ({"daily_limit": 0}, "daily_limit"),
        ({"from_email": "not-an-address"}, "from_email"),
        ({"password": None}, ""),
    ],
)
async def test_validation_errors(
    client: httpx.AsyncClient, tenant: Tenant, over: dict[str, Any], field: str
) -> None:
    body = pool_body()
    for key, value in over.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    reply = await client.post("/v1/smtp-pools", json=body, headers=tenant.headers)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "validation_failed"
    assert field in [d["field"] for d in error["details"]], error["details"]
    assert SECRET not in reply.text


async def test_several_problems_reported_at_once(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = pool_body(port=-1, encryption="tls1.3")
    body.pop("host")
    reply = await client.post("/v1/smtp-pools", json=body, headers=tenant.headers)
    fields = {d["field"] for d in reply.json()["error"]["details"]}
    assert {"host", "port", "encryption"} <= fields


async def test_duplicate_name_is_conflict(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await create(client, tenant)
    reply = await client.post("/v1/smtp-pools", json=pool_body(), headers=tenant.headers)
    assert reply.status_code == 409
    assert reply.json()["error"]["code"] == "conflict"


async def test_patch_null_on_required_field(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pool = await create(client, tenant)
    reply = await client.patch(
        f"/v1/smtp-pools/{pool['id']}", json={"host": None}, headers=tenant.headers
    )
    assert reply.status_code == 422


async def test_password_never_in_responses_or_database(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    pool = await create(client, tenant)
    texts = [
        (await client.get("/v1/smtp-pools", headers=tenant.headers)).text,
        (await client.get(f"/v1/smtp-pools/{pool['id']}", headers=tenant.headers)).text,
        (
            await client.patch(
                f"/v1/smtp-pools/{pool['id']}",
                json={"password": SECRET + "2"},
                headers=tenant.headers,
            )
        ).text,
        (await client.get("/openapi.json")).text,
    ]
    for text in texts:
        assert SECRET not in text
    if BACKEND == "sqlite":
        await runtime.engine.dispose()  # flush WAL into the file
        db_file = Path(runtime.settings.db_url.split("///", 1)[1])
        for path in db_file.parent.glob(db_file.name + "*"):
            assert SECRET.encode() not in path.read_bytes()
    else:
        import sqlalchemy as sa

        async with runtime.sessions() as session:
            dump = str((await session.execute(sa.text("SELECT * FROM smtp_pools"))).all())
        assert SECRET not in dump


async def test_other_account_gets_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    pool = await create(client, tenant)
    url = f"/v1/smtp-pools/{pool['id']}"
    for method in ("GET", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"port": 25}} if method == "PATCH" else {}
        reply = await client.request(method, url, headers=other_tenant.headers, **kwargs)
        assert reply.status_code == 404, method
    test = await client.post(url + "/test", headers=other_tenant.headers)
    assert test.status_code == 404
    assert (await client.get("/v1/smtp-pools", headers=other_tenant.headers)).json()["data"] == []
    assert (await client.get(url, headers=tenant.headers)).status_code == 200


# -- connection test through the API ------------------------------------------------------


async def run_test(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any] | None = None, **pool: Any
) -> dict[str, Any]:
    created = await create(client, tenant, **pool)
    reply = await client.post(
        f"/v1/smtp-pools/{created['id']}/test", json=body, headers=tenant.headers
    )
    assert reply.status_code == 200, reply.text
    assert SECRET not in reply.text
    return dict(reply.json())


async def test_connection_test_starttls_auth(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory
) -> None:
    relay = relay_factory(tls="starttls", require_tls=True, auth={"user": SECRET})
    result = await run_test(
        client, tenant, host="127.0.0.1", port=relay.port, username="user", encryption="tls"
    )
    assert result["success"] is True and result["error"] is None
    assert result["latency_ms"] >= 0
    assert relay.messages == []


async def test_connection_test_implicit_tls(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory
) -> None:
    relay = relay_factory(tls="implicit", auth={"user": SECRET})
    result = await run_test(
        client, tenant, host="127.0.0.1", port=relay.port, username="user", encryption="ssl"
    )
    assert result["success"] is True


async def test_connection_test_wrong_password_updates_health(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory
) -> None:
    relay = relay_factory(tls="starttls", auth={"user": "other-password"})
    result = await run_test(
        client, tenant, host="127.0.0.1", port=relay.port, username="user", encryption="tls"
    )
    assert result["success"] is False
    assert result["error"]["code"] == "smtp_auth_error"
    pools = (await client.get("/v1/smtp-pools", headers=tenant.headers)).json()["data"]
    health = pools[0]["health"]
    assert health["state"] == "degraded"
    assert health["last_error"].startswith("smtp_auth_error")
    assert health["last_checked_at"] is not None


async def test_connection_test_closed_port(
    client: httpx.AsyncClient, tenant: Tenant, closed_port: int
) -> None:
    result = await run_test(client, tenant, host="127.0.0.1", port=closed_port)
    assert result["error"]["code"] == "smtp_connection_error"


async def test_connection_test_timeout(
    client: httpx.AsyncClient, tenant: Tenant, silent_server: SilentServer
) -> None:
    result = await run_test(client, tenant, host="127.0.0.1", port=silent_server.port)
    assert result["error"]["code"] == "smtp_timeout"


async def test_connection_test_plain_relay_with_tls(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory
) -> None:
    relay = relay_factory(tls="none")
    result = await run_test(
        client,
        tenant,
        host="127.0.0.1",
        port=relay.port,
        encryption="tls",
        username=None,
        password=None,
    )
    assert result["error"]["code"] == "smtp_tls_error"


async def test_connection_test_sends_to_recipient(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory
) -> None:
    relay = relay_factory(tls="starttls", auth={"user": SECRET})
    result = await run_test(
        client,
        tenant,
        {"recipient": "ops@example.com"},
        host="127.0.0.1",
        port=relay.port,
        username="user",
        from_email="noreply@example.com",
    )
    assert result["success"] is True
    (message,) = relay.wait_for(1)
    assert list(message.rcpt_tos) == ["ops@example.com"]
    assert message.mail_from == "noreply@example.com"


async def test_connection_test_bad_recipient_is_422(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create(client, tenant)
    reply = await client.post(
        f"/v1/smtp-pools/{created['id']}/test", json={"recipient": "nope"}, headers=tenant.headers
    )
    assert reply.status_code == 422
    assert reply.json()["error"]["details"][0]["field"] == "recipient"


# -- limits of the database and of mail headers --------------------------------------------


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"daily_limit": 2**31}, "daily_limit"),  # INTEGER on PostgreSQL
        ({"daily_limit": 2**63}, "daily_limit"),  # INTEGER on SQLite
        ({"daily_limit": 10**30}, "daily_limit"),
        ({"name": "a\x0bb"}, "name"),
        ({"name": "nul\x00"}, "name"),
        ({"username": "user\x00x", "password": "p"}, "username"),
        ({"password": "Zq9\x00k7"}, "password"),
        ({"password": "Zq9\x1fk7"}, "password"),
    ],
)
async def test_out_of_range_or_control_characters_are_422(
    client: httpx.AsyncClient, tenant: Tenant, over: dict[str, Any], field: str
) -> None:
    reply = await client.post("/v1/smtp-pools", json=pool_body(**over), headers=tenant.headers)
    assert reply.status_code == 422, reply.text
    assert field in [d["field"] for d in reply.json()["error"]["details"]]
    assert "Zq9" not in reply.text and SECRET not in reply.text  # no password echoed
    pool = await create(client, tenant)
    patched = await client.patch(f"/v1/smtp-pools/{pool['id']}", json=over, headers=tenant.headers)
    assert patched.status_code == 422, patched.text


async def test_daily_limit_holds_in_32_bits(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pool = await create(client, tenant, daily_limit=2**31 - 1)
    got = await client.get(f"/v1/smtp-pools/{pool['id']}", headers=tenant.headers)
    assert got.json()["daily_limit"] == 2**31 - 1
    assert got.json()["usage"]["remaining_today"] == 2**31 - 1
    url, over = f"/v1/smtp-pools/{pool['id']}", {"daily_limit": 2**31}
    reply = await client.patch(url, json=over, headers=tenant.headers)
    assert reply.status_code == 422
    assert reply.json()["error"]["details"][0]["message"] == (
        "Input should be less than or equal to 2147483647"
    )


async def test_patch_takes_only_fields_of_a_pool(client: httpx.AsyncClient, tenant: Tenant) -> None:
    pool = await create(client, tenant)
    reply = await client.patch(
        f"/v1/smtp-pools/{pool['id']}", json={"NULLABLE": ["host"]}, headers=tenant.headers
    )
    assert reply.status_code == 422
    assert [d["field"] for d in reply.json()["error"]["details"]] == ["NULLABLE"]


@pytest.mark.parametrize("pool_id", ["smtp%00", "%C3%A9", "x" * 65])
async def test_ids_that_cannot_be_ids_are_422(
    client: httpx.AsyncClient, tenant: Tenant, pool_id: str
) -> None:
    url = f"/v1/smtp-pools/{pool_id}"
    for method in ("GET", "PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"port": 25}} if method == "PATCH" else {}
        reply = await client.request(method, url, headers=tenant.headers, **kwargs)
        assert reply.status_code == 422, (method, reply.text)
        assert [d["field"] for d in reply.json()["error"]["details"]] == ["pool_id"]
