"""HTTP routes for ``/v1/ip-credentials``: networks that may submit over SMTP without AUTH."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from postroute.accounts import ip_credentials as service
from postroute.api.deps import AccountDep, RuntimeDep, SessionDep

router = APIRouter(prefix="/v1/ip-credentials", tags=["ip-credentials"])


class IpCredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cidr: str = Field(
        min_length=1, max_length=64, description="A network (10.0.0.0/24) or one address."
    )
    description: str = Field(default="", max_length=service.MAX_DESCRIPTION)


class IpCredentialOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    cidr: str
    description: str
    created_at: datetime


class IpCredentialList(BaseModel):
    data: list[IpCredentialOut]


@router.get("", response_model=IpCredentialList, summary="List IP credentials")
async def list_credentials(account: AccountDep, session: SessionDep) -> IpCredentialList:
    rows = await service.list_for(session, account.account_id)
    return IpCredentialList(data=[IpCredentialOut.model_validate(r) for r in rows])


@router.post(
    "",
    response_model=IpCredentialOut,
    status_code=status.HTTP_201_CREATED,
    summary="Allow a network to submit without AUTH",
)
async def create_credential(
    data: IpCredentialCreate, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> IpCredentialOut:
    """A network belongs to one account: the same network, or one overlapping a network
    of another account, is a ``409``."""
    row = await service.add(session, account.account_id, data.cidr, data.description, rt.clock)
    await session.commit()
    return IpCredentialOut.model_validate(row)


@router.get("/{credential_id}", response_model=IpCredentialOut, summary="Get an IP credential")
async def get_credential(
    credential_id: str, account: AccountDep, session: SessionDep
) -> IpCredentialOut:
    return IpCredentialOut.model_validate(
        await service.get(session, account.account_id, credential_id)
    )


@router.delete(
    "/{credential_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an IP credential"
)
async def delete_credential(credential_id: str, account: AccountDep, session: SessionDep) -> None:
    await service.remove(session, account.account_id, credential_id)
    await session.commit()
