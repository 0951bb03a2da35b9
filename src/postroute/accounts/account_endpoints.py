"""HTTP routes for ``/v1/account``: the calling account's settings."""

from __future__ import annotations

from fastapi import APIRouter

from postroute.accounts import service
from postroute.accounts.schemas import AccountOut, AccountUpdate
from postroute.api.deps import AccountDep, SessionDep
from postroute.api.errors import responses
from postroute.api.routing import JsonRoute

router = APIRouter(prefix="/v1/account", tags=["account"], route_class=JsonRoute)


@router.get("", response_model=AccountOut, summary="Get the account", responses=responses(401, 429))
async def get_account(account: AccountDep, session: SessionDep) -> AccountOut:
    return AccountOut.model_validate(await service.get_account(session, account.account_id))


@router.patch(
    "",
    response_model=AccountOut,
    summary="Change the account's settings",
    responses=responses(401, 413, 422, 429),
)
async def update_account(
    data: AccountUpdate, account: AccountDep, session: SessionDep
) -> AccountOut:
    """`require_verified_domain`, and the defaults of `track_opens`, `track_clicks` and
    `unsubscribe_header` (List-Unsubscribe)."""
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    updated = await service.update_settings(session, account.account_id, **changes)
    await session.commit()
    return AccountOut.model_validate(updated)
