"""The JSON error envelope ``{"error": {"code", "message", "details"}}`` for every error."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from postroute import errors

log = logging.getLogger("postroute.api")

STATUS = {
    errors.VALIDATION_FAILED: 422,
    errors.NOT_FOUND: 404,
    errors.CONFLICT: 409,
    errors.UNAUTHORIZED: 401,
    errors.FORBIDDEN: 403,
    errors.POOL_NOT_FOUND: 422,
    errors.NO_POOL_CONFIGURED: 422,
    errors.PAYLOAD_TOO_LARGE: 413,
    errors.RATE_LIMITED: 429,
    errors.IDEMPOTENCY_CONFLICT: 409,
    errors.DOMAIN_NOT_VERIFIED: 422,
}

_HTTP_CODES = {
    401: errors.UNAUTHORIZED,
    403: errors.FORBIDDEN,
    404: errors.NOT_FOUND,
    405: "method_not_allowed",
    413: errors.PAYLOAD_TOO_LARGE,
}


def envelope(
    status: int, code: str, message: str, details: Sequence[dict[str, Any]] = ()
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"code": code, "message": message, "details": list(details)}}
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: Sequence[str | int]) -> str:
    """``("body", "to", 2, "email")`` → ``to[2].email``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def pydantic_details(raw: Sequence[Any]) -> list[dict[str, Any]]:
    details = []
    for err in raw:
        loc = [p for p in err.get("loc", ()) if not str(p).startswith("function-")]
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        details.append({"field": field_path(loc), "message": message})
    return details


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.DomainError)
    async def _domain(_: Request, exc: errors.DomainError) -> JSONResponse:
        return envelope(STATUS.get(exc.code, 400), exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = pydantic_details(exc.errors())
        return envelope(422, errors.VALIDATION_FAILED, "the request is not valid", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return envelope(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return envelope(500, errors.INTERNAL_ERROR, "internal error")
