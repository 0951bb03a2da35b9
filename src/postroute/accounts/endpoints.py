"""HTTP routes for ``/v1/api-keys``."""

from __future__ import annotations

from fastapi import APIRouter, status

from postroute.accounts import service
from postroute.accounts.schemas import KeyCreate, KeyCreated, KeyOut
from postroute.api.deps import AccountDep, RuntimeDep, SessionDep

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])


@router.get("", response_model=dict[str, list[KeyOut]], summary="List API keys")
async def list_keys(account: AccountDep, session: SessionDep) -> dict[str, list[KeyOut]]:
    keys = await service.list_keys(session, account.account_id)
    return {"data": [KeyOut.model_validate(k) for k in keys]}


@router.post(
    "", response_model=KeyCreated, status_code=status.HTTP_201_CREATED, summary="Create a key"
)
async def create_key(
    data: KeyCreate, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> KeyCreated:
    new = await service.create_key(session, account.account_id, data.name, rt.clock)
    await session.commit()
    return KeyCreated(**KeyOut.model_validate(new.key).model_dump(), key=new.plaintext)


@router.delete("/{key_id}", response_model=KeyOut, summary="Revoke a key")
async def revoke_key(
    key_id: str, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> KeyOut:
    key = await service.revoke_key(session, account.account_id, key_id, rt.clock)
    await session.commit()
    return KeyOut.model_validate(key)
