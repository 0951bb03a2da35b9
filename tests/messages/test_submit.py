"""The one submit path (``Submitter``): drafts planned against the account's pools as
last read, stored in one write guarded by those pools' stamp; a pool changed since (by
this process or another) makes the drafts be planned again against the pools read then."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from postroute import errors
from postroute.kit.clock import FakeClock
from postroute.messages import service
from postroute.messages.schemas import SendRequest
from postroute.messages.submit import Submitter
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message


def drafts(**kw: object) -> list:  # type: ignore[type-arg]
    body = {"from": "shop@example.com", "to": ["a@example.org"], "subject": "Hi", "text": "x"}
    body.update(kw)
    return service.drafts([SendRequest.model_validate(body)])


async def test_submit_stores_and_answers_ids(
    runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await add_pool(client, tenant, 2525)
    (reply,) = await Submitter(runtime).submit(
        tenant.account_id, drafts(to=["a@example.org", "b@example.org"])
    )
    assert [m.to for m in reply.messages] == ["a@example.org", "b@example.org"]
    for sent in reply.messages:
        detail = await message(client, tenant, sent.id)
        assert detail["status"] == "queued" and detail["message_id"] == sent.message_id


async def test_a_pool_renamed_since_the_plan_is_planned_again_and_refused(
    runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    pool = await add_pool(client, tenant, 2525, name="main")
    submitter = Submitter(runtime)
    planned = await submitter.plan(tenant.account_id, drafts(pool="main"), batch=False)
    renamed = await client.patch(
        f"/v1/smtp-pools/{pool['id']}", json={"name": "other"}, headers=tenant.headers
    )
    assert renamed.status_code == 200
    (result,) = await submitter.store([planned])
    assert isinstance(result, errors.DomainError) and result.code == errors.POOL_NOT_FOUND
    listed = await client.get("/v1/messages", headers=tenant.headers)
    assert listed.json()["data"] == []  # nothing of the stale write


async def test_a_pool_created_after_the_pools_were_read_is_usable_at_once(
    runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await add_pool(client, tenant, 2525, name="main")
    submitter = Submitter(runtime)
    await submitter.submit(tenant.account_id, drafts())  # the pools are read and kept
    await add_pool(client, tenant, 2526, name="backup")
    (reply,) = await submitter.submit(tenant.account_id, drafts(pool="backup"))
    detail = await message(client, tenant, reply.messages[0].id)
    assert detail["requested_pool"] == "backup"


async def test_one_write_for_several_plans_only_the_stale_ones_planned_again(
    runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await add_pool(client, tenant, 2525, name="main")
    await add_pool(client, other_tenant, 2525, name="theirs")
    submitter = Submitter(runtime)
    first = await submitter.plan(tenant.account_id, drafts(pool="main"), batch=False)
    second = await submitter.plan(other_tenant.account_id, drafts(pool="theirs"), batch=False)
    await client.patch(f"/v1/smtp-pools/{mine['id']}", json={"priority": 5}, headers=tenant.headers)
    results = await submitter.store([first, second])
    assert all(isinstance(r, list) for r in results)
    assert results[1] == second.replies  # its pools held: stored as planned
    assert results[0] != first.replies  # planned again (new ids), and stored


@pytest.mark.parametrize("batch", [False, True])
async def test_refused_drafts_store_nothing(
    runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant, batch: bool
) -> None:
    await add_pool(client, tenant, 2525)
    with pytest.raises(errors.DomainError):
        await Submitter(runtime).submit(
            tenant.account_id, drafts() + drafts(pool="nope"), batch=batch
        )
    assert (await client.get("/v1/messages", headers=tenant.headers)).json()["data"] == []


async def test_plans_of_several_times_see_an_entry_that_expired_between_them(
    runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant, clock: FakeClock
) -> None:
    """After a stale write, the list is read once for an account's plans, and each plan
    keeps the entries active at its own time (as its write's guard reads them)."""
    await add_pool(client, tenant, 2525)
    submitter = Submitter(runtime)
    earlier = await submitter.plan(tenant.account_id, drafts(), batch=False)
    expires = (clock.now() + timedelta(seconds=5)).isoformat()
    body = {"email": "a@example.org", "expires_at": expires}
    added = await client.post("/v1/suppressions", json=body, headers=tenant.headers)
    assert added.status_code == 201, added.text
    clock.advance(10)
    later = await submitter.plan(tenant.account_id, drafts(), batch=False)
    first, second = await submitter.store([earlier, later])
    assert isinstance(first, list) and isinstance(second, list)
    assert first[0].messages[0].error == errors.RECIPIENT_SUPPRESSED  # active at its time
    assert second[0].messages[0].error is None  # expired by its time: queued
