"""/v1/api-keys and /v1/ip-credentials over HTTP: revoking answers 204 like every delete,
names and descriptions are one line, and ids that cannot be ids are 422."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Tenant


async def test_revoking_a_key_is_204_without_a_body(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await client.post("/v1/api-keys", json={"name": "ci"}, headers=tenant.headers)
    key_id, key = created.json()["id"], created.json()["key"]
    revoked = await client.delete(f"/v1/api-keys/{key_id}", headers=tenant.headers)
    assert revoked.status_code == 204
    assert revoked.content == b""
    assert "content-type" not in revoked.headers
    again = await client.delete(f"/v1/api-keys/{key_id}", headers=tenant.headers)
    assert again.status_code == 204  # revoked already: nothing changes
    listed = (await client.get("/v1/api-keys", headers=tenant.headers)).json()["data"]
    assert [k["revoked_at"] is not None for k in listed if k["id"] == key_id] == [True]
    refused = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401


@pytest.mark.parametrize("name", ["ci\x0bX", "a\nb", "nul\x00", "del\x7f", "   "])
async def test_key_names_are_one_line(client: httpx.AsyncClient, tenant: Tenant, name: str) -> None:
    reply = await client.post("/v1/api-keys", json={"name": name}, headers=tenant.headers)
    assert reply.status_code == 422, reply.text
    assert [d["field"] for d in reply.json()["error"]["details"]] == ["name"]


@pytest.mark.parametrize("description", ["office\x0bX-Injected: 1", "a\x1cb", "\x7f"])
async def test_ip_credential_descriptions_are_one_line(
    client: httpx.AsyncClient, tenant: Tenant, description: str
) -> None:
    body = {"cidr": "192.0.2.0/24", "description": description}
    reply = await client.post("/v1/ip-credentials", json=body, headers=tenant.headers)
    assert reply.status_code == 422, reply.text
    assert [d["field"] for d in reply.json()["error"]["details"]] == ["description"]


@pytest.mark.parametrize(
    "path",
    ["/v1/api-keys/key%00", "/v1/ip-credentials/ipc%0B", "/v1/ip-credentials/%C3%A9"],
)
async def test_ids_that_cannot_be_ids_are_422(
    client: httpx.AsyncClient, tenant: Tenant, path: str
) -> None:
    for method in ("GET", "DELETE") if "ip-credentials" in path else ("DELETE",):
        reply = await client.request(method, path, headers=tenant.headers)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["code"] == "validation_failed"
    # shaped like an id: looked up
    for well_formed in ("/v1/api-keys/key_0123456789ABCDEFGHIJKLMNOP", "/v1/ip-credentials/nope"):
        reply = await client.delete(well_formed, headers=tenant.headers)
        assert reply.status_code == 404, reply.text
        assert reply.json()["error"]["code"] == "not_found"
