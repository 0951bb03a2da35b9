"""IP credentials: ``/v1/ip-credentials``, one account per network, the lookup of a
client address, and ``postroute ip-credentials``."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx
import pytest
from typer.testing import CliRunner

from postroute.accounts import ip_credentials
from postroute.cli import app
from postroute.config import Settings
from postroute.runtime import Runtime
from tests.conftest import Tenant

PATH = "/v1/ip-credentials"


async def create(
    client: httpx.AsyncClient, tenant: Tenant, cidr: str, expect: int = 201, **extra: str
) -> dict[str, object]:
    reply = await client.post(PATH, json={"cidr": cidr, **extra}, headers=tenant.headers)
    assert reply.status_code == expect, reply.text
    return dict(reply.json())


async def test_create_list_get_delete(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await create(client, tenant, " 10.1.0.0/16 ", description="app servers")
    assert created["cidr"] == "10.1.0.0/16" and created["description"] == "app servers"
    assert str(created["id"]).startswith("ipc_")
    single = await create(client, tenant, "2001:db8::7")
    assert single["cidr"] == "2001:db8::7/128"

    listed = (await client.get(PATH, headers=tenant.headers)).json()["data"]
    assert [c["id"] for c in listed] == [created["id"], single["id"]]
    one = await client.get(f"{PATH}/{created['id']}", headers=tenant.headers)
    assert one.json() == created

    assert (
        await client.delete(f"{PATH}/{created['id']}", headers=tenant.headers)
    ).status_code == 204
    assert (await client.get(f"{PATH}/{created['id']}", headers=tenant.headers)).status_code == 404
    assert len((await client.get(PATH, headers=tenant.headers)).json()["data"]) == 1


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.1/24", "has host bits set; did you mean 10.0.0.0/24?"),
        ("10.0.0.0/33", "is not an IP address or network"),
        ("example.com", "is not an IP address or network"),
        ("::ffff:10.0.0.0/104", "give IPv4-mapped networks as IPv4"),
    ],
)
async def test_invalid_networks_are_422(
    client: httpx.AsyncClient, tenant: Tenant, cidr: str, message: str
) -> None:
    reply = await client.post(PATH, json={"cidr": cidr}, headers=tenant.headers)
    assert reply.status_code == 422
    error = reply.json()["error"]
    assert error["code"] == "validation_failed" and message in error["message"]
    assert error["details"][0]["field"] == "cidr"


async def test_a_network_belongs_to_one_account(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await create(client, tenant, "10.1.0.0/16")
    await create(client, tenant, "10.1.2.0/24")  # overlapping within one account is fine
    for cidr in ("10.1.0.0/16", "10.0.0.0/8", "10.1.9.9"):
        reply = await client.post(PATH, json={"cidr": cidr}, headers=other_tenant.headers)
        assert reply.status_code == 409, cidr
        assert reply.json()["error"]["code"] == "conflict"
    assert (
        await client.post(PATH, json={"cidr": "10.1.0.0/16"}, headers=tenant.headers)
    ).status_code == 409
    await create(client, other_tenant, "10.2.0.0/16")


async def test_concurrent_overlapping_adds_of_two_accounts(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    """The overlap check and the insert are one step: of two accounts adding overlapping
    networks at the same moment, one gets 409."""
    for i in range(8):
        replies = await asyncio.gather(
            client.post(PATH, json={"cidr": f"10.{i}.0.0/16"}, headers=tenant.headers),
            client.post(PATH, json={"cidr": f"10.{i}.1.0/24"}, headers=other_tenant.headers),
        )
        assert sorted(r.status_code for r in replies) == [201, 409], [r.text for r in replies]
    mine = (await client.get(PATH, headers=tenant.headers)).json()["data"]
    theirs = (await client.get(PATH, headers=other_tenant.headers)).json()["data"]
    assert len(mine) + len(theirs) == 8
    for a in mine:
        for b in theirs:
            assert not ipaddress.ip_network(a["cidr"]).overlaps(ipaddress.ip_network(b["cidr"]))


async def test_foreign_ids_are_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    created = await create(client, tenant, "192.0.2.0/24")
    for method in ("GET", "DELETE"):
        reply = await client.request(
            method, f"{PATH}/{created['id']}", headers=other_tenant.headers
        )
        assert reply.status_code == 404
        assert reply.json()["error"]["code"] == "not_found"
    assert (await client.get(PATH, headers=other_tenant.headers)).json()["data"] == []
    assert (await client.get(PATH)).status_code == 401


async def test_lookup_of_a_client_address(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, runtime: Runtime
) -> None:
    await create(client, tenant, "10.0.0.0/8")
    await create(client, other_tenant, "192.0.2.0/24")
    await create(client, other_tenant, "2001:db8::/32")
    async with runtime.sessions() as session:
        found = {
            ip: await ip_credentials.account_for_ip(session, ip)
            for ip in ("10.9.8.7", "::ffff:10.1.1.1", "192.0.2.200", "2001:db8::1", "8.8.8.8", "x")
        }
    assert found == {
        "10.9.8.7": tenant.account_id,
        "::ffff:10.1.1.1": tenant.account_id,
        "192.0.2.200": other_tenant.account_id,
        "2001:db8::1": other_tenant.account_id,
        "8.8.8.8": None,
        "x": None,
    }


def test_cli_add_list_remove(
    settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTROUTE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("POSTROUTE_DATABASE_URL", settings.db_url)
    monkeypatch.setenv("POSTROUTE_SECRET_KEY", "test-secret-key-not-for-production")
    runner = CliRunner()
    added = runner.invoke(
        app, ["ip-credentials", "add", "127.0.0.1", "--account", "acme", "--description", "local"]
    )
    assert added.exit_code == 0, added.output
    credential_id, cidr, account = added.output.split()
    assert (cidr, account) == ("127.0.0.1/32", "acme")
    listed = runner.invoke(app, ["ip-credentials", "list", "--account", "acme"])
    assert listed.output.split() == [credential_id, "127.0.0.1/32", "local"]
    again = runner.invoke(app, ["ip-credentials", "add", "127.0.0.0/8", "--account", "nobody"])
    assert again.exit_code == 1 and "no account named 'nobody'" in again.output
    removed = runner.invoke(app, ["ip-credentials", "remove", credential_id, "--account", "acme"])
    assert removed.exit_code == 0, removed.output
    assert "no IP credentials" in runner.invoke(app, ["ip-credentials", "list"]).output
