"""HTTP-level input handling shared by every route: body size (declared or chunked), JSON
that Python accepts but JSON and the database do not, undecodable bodies, and 405s."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from postroute.api.app import create_app
from postroute.runtime import Runtime
from tests.conftest import Tenant

LIMIT = 100_000


@pytest.fixture
async def small(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that takes bodies of at most LIMIT bytes."""
    runtime.settings.max_request_bytes = LIMIT
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://postroute.test") as c:
        yield c


def assert_413(reply: httpx.Response) -> None:
    assert reply.status_code == 413, reply.text
    error = reply.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["message"] == f"request body is larger than {LIMIT} bytes"


@pytest.mark.parametrize("path", ["/v1/send", "/v1/send/batch", "/v1/smtp-pools", "/v1/api-keys"])
async def test_chunked_body_over_the_limit_is_413(
    small: httpx.AsyncClient, tenant: Tenant, path: str
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read as it comes
        yield b'{"subject": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}'

    headers = {**tenant.headers, "Content-Type": "application/json"}
    reply = await small.post(path, content=chunks(), headers=headers)
    assert "content-length" not in reply.request.headers
    assert_413(reply)


@pytest.mark.parametrize(
    "content",
    [
        b'{"name": "\\ud800"}',  # a lone surrogate, escaped
        b'{"name": "\xed\xa0\x80"}',  # the same, as (invalid) UTF-8
        b'{"name": "\xff\xfe"}',  # not UTF-8
        b"\xff\xfe 4",
        b'{"name": NaN}',
        b'{"name": "ci"',  # cut short
    ],
)
async def test_json_that_is_not_json_is_422(
    client: httpx.AsyncClient, tenant: Tenant, content: bytes
) -> None:
    headers = {**tenant.headers, "Content-Type": "application/json"}
    reply = await client.post("/v1/api-keys", content=content, headers=headers)
    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    assert error["code"] == "validation_failed"
    (detail,) = error["details"]
    assert detail["field"] == ""
    assert detail["message"].startswith("the body is not valid JSON: ")
    keys = (await client.get("/v1/api-keys", headers=tenant.headers)).json()["data"]
    assert [k["name"] for k in keys] == ["test"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/api-keys", "GET, POST"),
        ("OPTIONS", "/v1/smtp-pools", "GET, POST"),
        ("POST", "/v1/smtp-pools/smtp_0123456789ABCDEFGHIJKLMNOP", "DELETE, GET, PATCH"),
        ("TRACE", "/healthz", "GET"),
        ("DELETE", "/v1/messages", "GET"),
    ],
)
async def test_405_names_every_method_of_the_path(
    client: httpx.AsyncClient, tenant: Tenant, method: str, path: str, allowed: str
) -> None:
    reply = await client.request(method, path, headers=tenant.headers)
    assert reply.status_code == 405
    assert reply.headers["allow"] == allowed
    assert reply.json()["error"]["code"] == "method_not_allowed"
