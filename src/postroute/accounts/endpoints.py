"""HTTP routes for ``/v1/api-keys``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status

from postroute.accounts import service
from postroute.accounts.schemas import KeyCreate, KeyCreated, KeyList, KeyOut
from postroute.api.deps import AccountDep, RuntimeDep, SessionDep
from postroute.api.errors import responses
from postroute.api.params import object_id
from postroute.api.routing import JsonRoute

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"], route_class=JsonRoute)
KeyId = Annotated[str, object_id("key", "key_0123456789ABCDEFGHIJKLMNOP")]


@router.get("", response_model=KeyList, summary="List API keys", responses=responses(401, 429))
async def list_keys(account: AccountDep, session: SessionDep) -> KeyList:
    """Revoked keys too (with `revoked_at`); never the keys themselves."""
    keys = await service.list_keys(session, account.account_id)
    return KeyList(data=[KeyOut.model_validate(k) for k in keys])


@router.post(
    "",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a key",
    responses=responses(401, 413, 422, 429),
)
async def create_key(
    data: KeyCreate, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> KeyCreated:
    """The reply holds the key, once: only its hash is kept."""
    new = await service.create_key(session, account.account_id, data.name, rt.clock)
    await session.commit()
    return KeyCreated(**KeyOut.model_validate(new.key).model_dump(), key=new.plaintext)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a key",
    response_class=Response,
    responses=responses(401, 404, 422, 429),
)
async def revoke_key(
    key_id: KeyId, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> None:
    """At once and for good; revoking a revoked key changes nothing. The key that makes
    this request may revoke itself."""
    await service.revoke_key(session, account.account_id, key_id, rt.clock)
    await session.commit()
