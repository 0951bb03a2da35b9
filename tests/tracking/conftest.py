"""Tracking fixtures: the app with its tracking service (the tests drain its journal
themselves: the ASGI transport runs no lifespan), messages sent through /v1/send and a
recording relay so that their `sent` event exists, and tokens made with the runtime's
secret key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from postroute.api.app import create_app
from postroute.delivery.worker import Worker
from postroute.preparation.tokens import Tokens
from postroute.runtime import Runtime
from postroute.tracking.service import Tracking
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message
from tests.support.relay import RecordingRelay

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
BASE = "http://postroute.test"


@pytest.fixture
def app(runtime: Runtime) -> FastAPI:
    return create_app(runtime)


@pytest.fixture
async def tracking(app: FastAPI) -> AsyncIterator[Tracking]:
    service: Tracking = app.state.tracking
    yield service
    await service.stop()


@pytest.fixture
async def client(app: FastAPI, tracking: Tracking) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a reader's browser at 203.0.113.7 reaches it."""
    async with visitor(app, "203.0.113.7") as c:
        yield c


def visitor(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50123))
    return httpx.AsyncClient(transport=transport, base_url=BASE, headers={"User-Agent": CHROME})


@pytest.fixture
def tokens(runtime: Runtime) -> Tokens:
    return Tokens(runtime.settings.secret_keys)


async def sent_messages(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    count: int = 1,
) -> list[str]:
    """``count`` messages sent (their `sent` event at the fake clock's time); their ids."""
    await add_pool(client, tenant, relay.port)
    body = {
        "messages": [
            {
                "from": "shop@example.com",
                "to": f"reader{i}@example.org",
                "subject": "Your order",
                "html": '<p>Thanks! <a href="https://shop.example.com/a">a</a></p>',
            }
            for i in range(count)
        ]
    }
    reply = await client.post("/v1/send/batch", json=body, headers=tenant.headers)
    assert reply.status_code == 202, reply.text
    ids = [r["messages"][0]["id"] for r in reply.json()["data"]]
    await worker.drain()
    await relay.wait_for_async(count)
    return ids


async def events_of(
    client: httpx.AsyncClient, tenant: Tenant, message_id: str, *types: str
) -> list[dict[str, Any]]:
    """The message's events of those types, oldest first (as the API shows them)."""
    detail = await message(client, tenant, message_id)
    return [e for e in detail["events"] if not types or e["type"] in types]
