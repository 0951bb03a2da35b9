"""HTTP routes for ``/v1/suppressions``: the addresses the account does not mail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from postroute.api.deps import AccountDep, RuntimeDep, SessionDep
from postroute.api.errors import responses
from postroute.api.params import TEXT_MAX, TEXT_PATTERN
from postroute.api.routing import JsonRoute
from postroute.db import begin_read
from postroute.kit import cursors
from postroute.suppressions import service
from postroute.suppressions.schemas import (
    Reason,
    SuppressionCreate,
    SuppressionList,
    SuppressionOut,
    suppression_out,
)

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"], route_class=JsonRoute)
Email = Annotated[
    str,
    Path(
        description="The address (its domain in any case).",
        examples=["customer@example.org"],
        max_length=TEXT_MAX,
        pattern=TEXT_PATTERN,
    ),
]


@router.get(
    "",
    response_model=SuppressionList,
    summary="List suppressed addresses",
    responses=responses(401, 422, 429),
)
async def list_suppressions(
    account: AccountDep,
    session: SessionDep,
    rt: RuntimeDep,
    reason: Annotated[Reason | None, Query(description="Only entries of this reason.")] = None,
    email: Annotated[
        str | None,
        Query(description="Part of the address.", max_length=TEXT_MAX, pattern=TEXT_PATTERN),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(description="`next_cursor` of the previous page.", pattern=cursors.PATTERN),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> SuppressionList:
    """Newest first, expired entries included (`active: false`); `next_cursor` is set
    while there are more."""
    await begin_read(session)
    found, after = await service.page(
        session, account.account_id, reason=reason, email=email, cursor=cursor, limit=limit
    )
    now = rt.clock.now()
    return SuppressionList(data=[suppression_out(s, now) for s in found], next_cursor=after)


@router.post(
    "",
    response_model=SuppressionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Suppress an address",
    responses=responses(401, 413, 422, 429),
)
async def add_suppression(
    data: SuppressionCreate, account: AccountDep, rt: RuntimeDep
) -> SuppressionOut:
    """Sends to it are recorded `dropped` from now on, and mail already queued for it is
    dropped before it is sent. An address listed already keeps the entry that lasts
    longer (an unexpiring one over one that expires): the reply shows the entry as it is."""
    found = await service.add(
        rt, account.account_id, data.email, reason=data.reason, expires_at=data.expires_at
    )
    return suppression_out(found, rt.clock.now())


@router.get(
    "/{email:path}",
    response_model=SuppressionOut,
    summary="Get a suppressed address",
    responses=responses(401, 404, 422, 429),
)
async def get_suppression(
    email: Email, account: AccountDep, session: SessionDep, rt: RuntimeDep
) -> SuppressionOut:
    await begin_read(session)
    found = await service.require(session, account.account_id, email)
    return suppression_out(found, rt.clock.now())


@router.delete(
    "/{email:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove an address from the list",
    responses=responses(401, 404, 422, 429),
)
async def delete_suppression(email: Email, account: AccountDep, rt: RuntimeDep) -> Response:
    """Sends to it go again (a later hard bounce, complaint or unsubscribe adds it back)."""
    await service.remove(rt, account.account_id, email)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
