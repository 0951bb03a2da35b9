"""Delivery fixtures: a worker on the test runtime, pools pointing at recording relays."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from postroute.api.runtime import Runtime
from postroute.delivery.worker import Worker
from tests.conftest import Tenant


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    w = Worker(runtime, owner="test-worker")
    yield w
    await w.close()


async def add_pool(
    client: httpx.AsyncClient, tenant: Tenant, port: int, **over: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"relay-{port}", "host": "127.0.0.1", "port": port}
    body["encryption"] = "none"
    body.update(over)
    reply = await client.post("/v1/smtp-pools", json=body, headers=tenant.headers)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def send(
    client: httpx.AsyncClient, tenant: Tenant, expect: int = 202, **over: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "shop@example.com",
        "to": ["customer@example.org"],
        "subject": "Your order",
        "text": "Thanks for your order.",
    }
    body.update(over)
    reply = await client.post("/v1/send", json=body, headers=tenant.headers)
    assert reply.status_code == expect, reply.text
    return dict(reply.json())


async def message(client: httpx.AsyncClient, tenant: Tenant, message_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())
