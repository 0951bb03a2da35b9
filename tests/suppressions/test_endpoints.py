"""``/v1/suppressions``: add by hand, read, filter, page, remove; bad input refused
with the JSON error envelope; another account's list is not visible."""

from __future__ import annotations

from datetime import timedelta

import httpx

from postroute.kit.clock import FakeClock
from tests.conftest import Tenant


async def add(
    client: httpx.AsyncClient, tenant: Tenant, email: str, **over: object
) -> httpx.Response:
    return await client.post(
        "/v1/suppressions", json={"email": email, **over}, headers=tenant.headers
    )


async def test_an_address_added_by_hand_is_listed_and_found_by_any_domain_case(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    reply = await add(client, tenant, "Jane.Doe@Example.ORG")
    assert reply.status_code == 201, reply.text
    entry = reply.json()
    assert entry["email"] == "Jane.Doe@example.org"
    assert (entry["reason"], entry["source"], entry["expires_at"]) == ("manual", "api", None)
    assert entry["active"] is True
    found = await client.get("/v1/suppressions/Jane.Doe@EXAMPLE.org", headers=tenant.headers)
    assert found.status_code == 200 and found.json() == entry
    other_case = await client.get("/v1/suppressions/jane.doe@example.org", headers=tenant.headers)
    assert other_case.status_code == 404  # the local part is exact
    assert other_case.json()["error"]["code"] == "not_found"


async def test_the_list_filters_and_pages_newest_first(
    client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
) -> None:
    for i in range(5):
        assert (await add(client, tenant, f"user{i}@example.org")).status_code == 201
        clock.advance(1)
    await add(client, tenant, "someone@other.example")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", "email": "example.org", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/suppressions", params=params, headers=tenant.headers)).json()
        seen += [e["email"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"user{i}@example.org" for i in reversed(range(5))]
    by_reason = await client.get(
        "/v1/suppressions", params={"reason": "unsubscribe"}, headers=tenant.headers
    )
    assert by_reason.json() == {"data": [], "next_cursor": None}


async def test_an_entry_that_lasts_longer_is_kept(
    client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
) -> None:
    soon = (clock.now() + timedelta(days=1)).isoformat()
    later = (clock.now() + timedelta(days=9)).isoformat()
    assert (await add(client, tenant, "a@example.org", expires_at=soon)).status_code == 201
    longer = (await add(client, tenant, "a@example.org", expires_at=later)).json()
    assert longer["expires_at"].startswith(later[:19])
    forever = (await add(client, tenant, "a@example.org")).json()
    assert forever["expires_at"] is None
    again = (await add(client, tenant, "a@example.org", expires_at=soon)).json()
    assert again["expires_at"] is None  # the unexpiring entry stays


async def test_an_expiry_without_a_zone_is_utc(
    client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
) -> None:
    naive = (clock.now() + timedelta(days=1)).replace(tzinfo=None, microsecond=0).isoformat()
    reply = await add(client, tenant, "a@example.org", expires_at=naive)
    assert reply.status_code == 201, reply.text
    assert reply.json()["expires_at"] in (f"{naive}Z", f"{naive}+00:00")


async def test_removing_an_address(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await add(client, tenant, "gone@example.org")
    path = "/v1/suppressions/gone@EXAMPLE.org"
    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    assert (await client.get(path, headers=tenant.headers)).status_code == 404
    again = await client.delete(path, headers=tenant.headers)
    assert again.status_code == 404
    assert "not on the suppression list" in again.json()["error"]["message"]


async def test_bad_input_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
) -> None:
    past = (clock.now() - timedelta(seconds=1)).isoformat()
    cases = [
        ({"email": "not an address"}, "email"),
        ({"email": "a@example.org", "reason": "hard_bounce"}, "reason"),  # by hand: manual
        ({"email": "a@example.org", "expires_at": past}, "expires_at"),
        ({"email": "a@example.org", "expires_at": "9999-12-31T23:59:59-05:00"}, "expires_at"),
        ({"email": "a@example.org", "expires_at": 99999999999999}, "expires_at"),
        ({"email": "a@example.org", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        reply = await client.post("/v1/suppressions", json=body, headers=tenant.headers)
        assert reply.status_code == 422, (body, reply.text)
        assert reply.json()["error"]["code"] == "validation_failed"
        assert field in reply.text
    bad_cursor = await client.get(
        "/v1/suppressions", params={"cursor": "bXNnX3g"}, headers=tenant.headers
    )
    assert bad_cursor.status_code == 422
    listed = await client.get("/v1/suppressions", headers=tenant.headers)
    assert listed.json()["data"] == []


async def test_another_accounts_list_is_not_visible(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await add(client, tenant, "mine@example.org")
    theirs = await client.get("/v1/suppressions", headers=other_tenant.headers)
    assert theirs.json()["data"] == []
    reply = await client.get("/v1/suppressions/mine@example.org", headers=other_tenant.headers)
    assert reply.status_code == 404
    assert (await client.get("/v1/suppressions")).status_code == 401
