"""FastAPI dependencies: the runtime, a session per request, the calling account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.accounts import service as accounts
from postroute.accounts.service import AccountContext
from postroute.db import begin_read
from postroute.kit.guard import TooManyAttempts
from postroute.messages.submit import Submitter
from postroute.runtime import Runtime

_bearer = HTTPBearer(
    auto_error=False, description="An API key: `Authorization: Bearer pr_live_...`"
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One session per request. Endpoints that write commit it themselves."""
    async with runtime.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_submitter(request: Request) -> Submitter:
    """The app's submit path (its pools cache is kept across requests)."""
    submitter: Submitter | None = getattr(request.app.state, "submitter", None)
    if submitter is None:
        submitter = request.app.state.submitter = Submitter(get_runtime(request))
    return submitter


SubmitterDep = Annotated[Submitter, Depends(get_submitter)]


async def current_account(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccountContext:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise errors.Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    key = credentials.credentials

    async def lookup() -> AccountContext | None:
        await begin_read(session)  # most requests only read the key: no write lock
        found = await accounts.identify(session, key, runtime.clock)
        await session.commit()
        return found

    source = request.client.host if request.client is not None else "unknown"
    try:  # limits on key guessing, shared with SMTP AUTH
        context = await runtime.guard.check(source, key, lookup)
    except TooManyAttempts:
        raise errors.DomainError(
            "too many authentication attempts from your address; try again later",
            code=errors.RATE_LIMITED,
        ) from None
    if context is None:
        raise errors.Unauthorized("invalid or revoked API key")
    if context.touch_due:  # at most once a minute per key, in its own write transaction
        await accounts.touch(session, context, runtime.clock)
        await session.commit()
    return context


AccountDep = Annotated[AccountContext, Depends(current_account)]
