"""The JSON error envelope ``{"error": {"code", "message", "details"}}`` for every error,
and its description in the OpenAPI document."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from postroute import errors

log = logging.getLogger("postroute.api")

NOT_READY = "not_ready"
BAD_REQUEST = "bad_request"
METHOD_NOT_ALLOWED = "method_not_allowed"

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
    errors.RECIPIENT_SUPPRESSED: 422,
}

_HTTP_CODES = {
    400: BAD_REQUEST,
    401: errors.UNAUTHORIZED,
    403: errors.FORBIDDEN,
    404: errors.NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: errors.PAYLOAD_TOO_LARGE,
}


class ErrorDetail(BaseModel):
    field: str = Field(
        description="Path of the field at fault (`to[1]`, `messages[3].subject`); "
        "empty for the request as a whole.",
        examples=["to[1]"],
    )
    message: str = Field(examples=["invalid email address: ..."])


class ErrorBody(BaseModel):
    code: str = Field(
        description="Stable, for programs: `validation_failed`, `unauthorized`, `not_found`, "
        "`conflict`, `idempotency_conflict`, `pool_not_found`, `no_pool_configured`, "
        "`payload_too_large`, `rate_limited`, `method_not_allowed`, `not_ready`, "
        "`internal_error`.",
        examples=["validation_failed"],
    )
    message: str = Field(description="For people.", examples=["the request is not valid"])
    details: list[ErrorDetail] = Field(description="Every problem at once (validation).")


class ErrorEnvelope(BaseModel):
    """Every error answer: a code, a message and, for invalid input, the problems."""

    error: ErrorBody


_WHEN = {
    401: (errors.UNAUTHORIZED, "Missing, unknown or revoked API key."),
    404: (errors.NOT_FOUND, "No such object in this account."),
    409: (errors.CONFLICT, "Conflicts with an existing object."),
    413: (errors.PAYLOAD_TOO_LARGE, "The body is larger than POSTROUTE_MAX_REQUEST_BYTES."),
    422: (errors.VALIDATION_FAILED, "Invalid input: every problem in `details`."),
    429: (errors.RATE_LIMITED, "Too many failed authentications from this address."),
    503: (NOT_READY, "Not ready: stopping, or the database is unreachable."),
}


def responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer: ``409`` or, with a
    description of when, ``(409, "A pool of that name exists.")``."""
    out: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, when = entry if isinstance(entry, tuple) else (entry, None)
        code, description = _WHEN[status]
        example = {"error": {"code": code, "message": description, "details": []}}
        out[status] = {
            "model": ErrorEnvelope,
            "description": when or description,
            "content": {"application/json": {"example": example}},
        }
    return out


def envelope(
    status: int,
    code: str,
    message: str,
    details: Sequence[dict[str, Any]] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {"error": {"code": code, "message": message, "details": list(details)}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def field_path(loc: Sequence[str | int]) -> str:
    """``("body", "to", 2, "email")`` → ``to[2].email``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "":  # an empty dict key
            out += '[""]'
        elif part != "[key]":  # pydantic's mark for "the key of this entry"
            out += ("." if out else "") + str(part)
    return out


def pydantic_details(raw: Sequence[Any]) -> list[dict[str, Any]]:
    details = []
    for err in raw:
        if err.get("type") == "json_invalid":  # the body as a whole
            reason = (err.get("ctx") or {}).get("error", "")
            details.append({"field": "", "message": f"the body is not valid JSON: {reason}"})
            continue
        loc = [p for p in err.get("loc", ()) if not str(p).startswith("function-")]
        message = str(err.get("msg", "invalid value"))
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
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
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (methods := _methods_of(app, request)):
            headers["Allow"] = ", ".join(methods)
        return envelope(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return envelope(500, errors.INTERNAL_ERROR, "internal error")


def _methods_of(app: FastAPI, request: Request) -> list[str]:
    """The methods documented at the request's path (Starlette's 405 names only those of
    one of its routes)."""
    path = request.url.path
    for template, operations in app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            return sorted(method.upper() for method in operations)
    return []
