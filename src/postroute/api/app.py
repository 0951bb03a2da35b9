"""The FastAPI application factory: routers, error envelope, request size limit, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postroute import __version__, errors
from postroute.accounts.endpoints import router as keys_router
from postroute.accounts.ip_endpoints import router as ip_credentials_router
from postroute.api import errors as api_errors
from postroute.api.runtime import Runtime
from postroute.messages.endpoints import router as messages_router
from postroute.pools.endpoints import router as pools_router


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before they are read in full."""

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
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = api_errors.envelope(
            413, errors.PAYLOAD_TOO_LARGE, f"request body is larger than {self.limit} bytes"
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_app(runtime: Runtime, *, own_runtime: bool = False) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if own_runtime:
            await runtime.close()

    app = FastAPI(
        title="Postroute",
        version=__version__,
        description="Self-hosted transactional email: send API, SMTP pools, events.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    api_errors.install(app)
    app.include_router(pools_router)
    app.include_router(keys_router)
    app.include_router(ip_credentials_router)
    app.include_router(messages_router)

    @app.get("/healthz", tags=["health"], summary="Liveness and database check")
    async def healthz() -> dict[str, str]:
        async with runtime.sessions() as session:
            await session.execute(sa.text("SELECT 1"))
        return {"status": "ok"}

    app.add_middleware(BodyLimit, limit=runtime.settings.max_request_bytes)
    return app
