"""HTTP routes for ``/v1/smtp-pools`` (thin: parse, call the service, commit, shape)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status

from postroute.api.deps import AccountDep, RuntimeDep, SessionDep
from postroute.api.errors import responses
from postroute.api.params import object_id
from postroute.api.routing import JsonRoute
from postroute.pools import service
from postroute.pools.probe import probe
from postroute.pools.schemas import (
    PoolCreate,
    PoolList,
    PoolOut,
    PoolTestRequest,
    PoolTestResult,
    PoolUpdate,
)

router = APIRouter(prefix="/v1/smtp-pools", tags=["smtp-pools"], route_class=JsonRoute)
PoolId = Annotated[str, object_id("pool", "smtp_0123456789ABCDEFGHIJKLMNOP")]
_NAME_TAKEN = (409, "`conflict`: another pool of this account has that name.")


@router.get("", response_model=PoolList, summary="List SMTP pools", responses=responses(401, 429))
async def list_pools(account: AccountDep, session: SessionDep, rt: RuntimeDep) -> PoolList:
    pools = await service.list_pools(session, account.account_id)
    return PoolList(data=await service.views(session, pools, rt.clock))


@router.post(
    "",
    response_model=PoolOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a pool",
    responses=responses(401, _NAME_TAKEN, 413, 422, 429),
)
async def create_pool(
    data: PoolCreate, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> PoolOut:
    """The account's first pool becomes its default."""
    pool = await service.create_pool(session, account.account_id, data, rt.box, rt.clock)
    await session.commit()
    return service.to_view(pool, None)


@router.get(
    "/{pool_id}",
    response_model=PoolOut,
    summary="Get a pool",
    responses=responses(401, 404, 422, 429),
)
async def get_pool(
    pool_id: PoolId, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> PoolOut:
    pool = await service.get_pool(session, account.account_id, pool_id)
    return (await service.views(session, [pool], rt.clock))[0]


@router.patch(
    "/{pool_id}",
    response_model=PoolOut,
    summary="Update a pool",
    responses=responses(401, 404, _NAME_TAKEN, 413, 422, 429),
)
async def update_pool(
    pool_id: PoolId, data: PoolUpdate, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> PoolOut:
    pool = await service.update_pool(session, account.account_id, pool_id, data, rt.box, rt.clock)
    await session.commit()
    return (await service.views(session, [pool], rt.clock))[0]


@router.delete(
    "/{pool_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a pool",
    responses=responses(401, 404, 422, 429),
)
async def delete_pool(pool_id: PoolId, account: AccountDep, session: SessionDep) -> None:
    await service.delete_pool(session, account.account_id, pool_id)
    await session.commit()


@router.post(
    "/{pool_id}/test",
    response_model=PoolTestResult,
    summary="Test the connection",
    responses=responses(401, 404, 413, 422, 429),
)
async def test_pool(
    pool_id: PoolId,
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
    body: PoolTestRequest | None = Body(default=None),
) -> PoolTestResult:
    """Connect, EHLO, STARTTLS or TLS, AUTH, QUIT; with `recipient`, also send a test
    message. A relay that fails answers 200 with `success: false` and the reason."""
    pool = await service.get_pool(session, account.account_id, pool_id)
    relay = service.relay_config(pool, rt.box)
    sender = pool.from_email
    await session.commit()  # hold no transaction while talking to the relay
    result = await probe(
        relay, rt.client_options, recipient=body.recipient if body else None, sender=sender
    )
    await service.record_probe(session, account.account_id, pool_id, result, rt.clock)
    await session.commit()
    return PoolTestResult.model_validate(result.as_dict())
