"""HTTP routes for ``/v1/ip-credentials``: networks that may submit over SMTP without AUTH."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from postroute.accounts import ip_credentials as service
from postroute.api.deps import AccountDep, RuntimeDep, SessionDep
from postroute.api.errors import responses
from postroute.api.params import object_id
from postroute.api.routing import JsonRoute
from postroute.kit import text as v

router = APIRouter(prefix="/v1/ip-credentials", tags=["ip-credentials"], route_class=JsonRoute)
CredentialId = Annotated[str, object_id("IP credential", "ipc_0123456789ABCDEFGHIJKLMNOP")]
Line = Annotated[str, AfterValidator(v.single_line), v.NO_CONTROL]


class IpCredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cidr: Annotated[str, v.JsonSchemaExtra(pattern=r"^[0-9A-Fa-f.:/ ]+$")] = Field(
        min_length=1,
        max_length=64,
        description="A network (`10.0.0.0/24`, `2001:db8::/32`) or one address; host bits "
        "must be zero. IPv4-mapped IPv6 networks are given as IPv4.",
        examples=["10.0.0.0/24"],
    )
    description: Line = Field(
        default="",
        max_length=service.MAX_DESCRIPTION,
        description="One line, for people.",
        examples=["office"],
    )


class IpCredentialOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str = Field(examples=["ipc_0123456789ABCDEFGHIJKLMNOP"])
    cidr: str = Field(description="The network, normalised.", examples=["10.0.0.0/24"])
    description: str = Field(examples=["office"])
    created_at: datetime = Field(description="ISO 8601, UTC.")


class IpCredentialList(BaseModel):
    data: list[IpCredentialOut] = Field(description="Oldest first.")


@router.get(
    "",
    response_model=IpCredentialList,
    summary="List IP credentials",
    responses=responses(401, 429),
)
async def list_credentials(account: AccountDep, session: SessionDep) -> IpCredentialList:
    rows = await service.list_for(session, account.account_id)
    return IpCredentialList(data=[IpCredentialOut.model_validate(r) for r in rows])


@router.post(
    "",
    response_model=IpCredentialOut,
    status_code=status.HTTP_201_CREATED,
    summary="Allow a network to submit without AUTH",
    responses=responses(
        401, (409, "`conflict`: the network, or one overlapping it, is taken."), 413, 422, 429
    ),
)
async def create_credential(
    data: IpCredentialCreate, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> IpCredentialOut:
    """A network belongs to one account: the same network, or one overlapping a network
    of another account, is a ``409``."""
    row = await service.add(session, account.account_id, data.cidr, data.description, rt.clock)
    await session.commit()
    return IpCredentialOut.model_validate(row)


@router.get(
    "/{credential_id}",
    response_model=IpCredentialOut,
    summary="Get an IP credential",
    responses=responses(401, 404, 422, 429),
)
async def get_credential(
    credential_id: CredentialId, account: AccountDep, session: SessionDep
) -> IpCredentialOut:
    return IpCredentialOut.model_validate(
        await service.get(session, account.account_id, credential_id)
    )


@router.delete(
    "/{credential_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove an IP credential",
    response_class=Response,
    responses=responses(401, 404, 422, 429),
)
async def delete_credential(
    credential_id: CredentialId, account: AccountDep, session: SessionDep
) -> None:
    await service.remove(session, account.account_id, credential_id)
    await session.commit()
