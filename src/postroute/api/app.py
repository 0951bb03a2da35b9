"""The FastAPI application factory: routers, error envelope, request size limit, health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postroute import __version__, errors
from postroute.accounts.account_endpoints import router as account_router
from postroute.accounts.endpoints import router as keys_router
from postroute.accounts.ip_endpoints import router as ip_credentials_router
from postroute.api import errors as api_errors
from postroute.api import openapi
from postroute.db import begin_read
from postroute.domains.endpoints import router as domains_router
from postroute.messages.endpoints import router as messages_router
from postroute.pools.endpoints import router as pools_router
from postroute.runtime import Runtime
from postroute.suppressions.endpoints import router as suppressions_router
from postroute.tracking.endpoints import router as tracking_router
from postroute.tracking.service import Tracking

log = logging.getLogger("postroute.api")
READY_TIMEOUT = 5.0  # seconds the database may take to answer /readyz


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before they are read in full:
    at once when Content-Length says so, else (chunked) as soon as the count passes it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge(self.limit)  # the endpoint's error handler answers 413
            return message

        try:
            await self.app(scope, limited, send)
        except TooLarge:  # read outside an endpoint
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = api_errors.envelope(413, errors.PAYLOAD_TOO_LARGE, TooLarge(self.limit).detail)
        await response(scope, receive, send)


class TooLarge(HTTPException):
    """An HTTP error, so that FastAPI's body parsing lets it through to our handler (it
    turns any other exception into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class Health(BaseModel):
    status: Literal["ok"] = Field(description="The process answers.")


class Readiness(BaseModel):
    status: Literal["ready"] = Field(description="The database answers; not stopping.")


def create_app(runtime: Runtime, *, own_runtime: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await tracking.start()  # drains hits journaled by the tracking endpoints
        yield
        await tracking.stop()
        if own_runtime:
            await runtime.close()

    app = FastAPI(
        title="Postroute",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.tracking = tracking = Tracking.build(runtime)
    api_errors.install(app)
    openapi.install(app)
    app.include_router(tracking_router)  # first: the busiest routes match at once
    app.include_router(messages_router)
    app.include_router(pools_router)
    app.include_router(keys_router)
    app.include_router(ip_credentials_router)
    app.include_router(domains_router)
    app.include_router(account_router)
    app.include_router(suppressions_router)

    @app.get("/healthz", tags=["health"], summary="Liveness", response_model=Health)
    async def healthz() -> Health:
        """The process answers. Readiness (database, stopping) is `/readyz`."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness",
        response_model=Readiness,
        responses=api_errors.responses(503),
    )
    async def readyz() -> Response | Readiness:
        """200 while the database answers and the process is not stopping; 503 otherwise,
        with the reason (`stopping`, `database unreachable`) as the message."""
        reason = "stopping" if runtime.stopping else await _database_problem(runtime)
        if reason is not None:
            return api_errors.envelope(503, api_errors.NOT_READY, reason)
        return Readiness(status="ready")

    app.add_middleware(BodyLimit, limit=runtime.settings.max_request_bytes)
    return app


async def _database_problem(runtime: Runtime) -> str | None:
    try:
        async with asyncio.timeout(READY_TIMEOUT), runtime.sessions() as session:
            await begin_read(session)  # SQLite: no write lock
            await session.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means: do not send traffic here
        log.warning("readiness: the database does not answer (%s)", type(exc).__name__)
        return "database unreachable"
    return None
