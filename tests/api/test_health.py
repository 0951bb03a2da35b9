"""/healthz (the process answers) and /readyz (send traffic here: the database answers and
the process is not stopping)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from postroute.api.app import create_app
from postroute.config import Settings
from postroute.kit.clock import FakeClock
from postroute.runtime import Runtime


async def test_ready(client: httpx.AsyncClient) -> None:
    reply = await client.get("/readyz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ready"}
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_not_ready_once_stopping(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.stopping = True
    reply = await client.get("/readyz")
    assert reply.status_code == 503
    assert reply.json() == {"error": {"code": "not_ready", "message": "stopping", "details": []}}
    assert (await client.get("/healthz")).status_code == 200  # alive all the same


@pytest.fixture(params=["postgresql", "sqlite"])
async def unreachable(
    request: pytest.FixtureRequest,
    settings: Settings,
    clock: FakeClock,
    closed_port: int,
    tmp_path: Path,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose database cannot be reached: a PostgreSQL port that refuses
    connections, or a SQLite file in a directory that does not exist."""
    if request.param == "postgresql":
        url = f"postgresql+asyncpg://postroute:not-the-password@127.0.0.1:{closed_port}/postroute"
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'postroute.db'}"
    rt = Runtime.build(settings.model_copy(update={"database_url": url}), clock=clock)
    transport = httpx.ASGITransport(app=create_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://postroute.test") as c:
        yield c
    await rt.close()


async def test_not_ready_without_the_database(unreachable: httpx.AsyncClient) -> None:
    reply = await unreachable.get("/readyz")
    assert reply.status_code == 503
    assert reply.json()["error"] == {
        "code": "not_ready",
        "message": "database unreachable",
        "details": [],
    }
    assert "not-the-password" not in reply.text
    alive = await unreachable.get("/healthz")  # liveness does not depend on the database
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
