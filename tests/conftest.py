"""Shared fixtures. The whole suite runs on SQLite (default) or PostgreSQL:

    POSTROUTE_TEST_DATABASE=postgresql pytest

PostgreSQL gets one fresh database per run (dropped at the end); each test starts from
empty tables. SQLite gets a migrated template file, copied for every test.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx
import pytest
import sqlalchemy as sa

from postroute import migrate
from postroute.accounts import service as accounts
from postroute.api.app import create_app
from postroute.config import Settings
from postroute.db import create_engine
from postroute.kit.clock import FakeClock
from postroute.models import Base
from postroute.runtime import Runtime

if TYPE_CHECKING:
    from tests.support.fixtures import RelayCA

pytest_plugins = ["tests.support.fixtures"]  # relays, CA, closed port, silent server

BACKEND = os.environ.get("POSTROUTE_TEST_DATABASE", "sqlite")
PG_DSN = os.environ.get("POSTROUTE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


def pytest_report_header() -> str:
    return f"postroute database backend: {BACKEND}"


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite: path of a migrated template file. PostgreSQL: URL of a fresh database."""
    if BACKEND == "sqlite":
        path = tmp_path_factory.mktemp("template") / "template.db"
        asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
        yield str(path)
        return
    name = f"postroute_test_{os.getpid()}_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(f"{PG_DSN}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{PG_DSN.split('://', 1)[1]}/{name}"
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_url(database_template: str, tmp_path: Path) -> str:
    if BACKEND == "sqlite":
        target = tmp_path / "postroute.db"
        shutil.copyfile(database_template, target)
        return f"sqlite+aiosqlite:///{target}"
    return database_template


async def _truncate(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"TRUNCATE {tables} CASCADE"))
    await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(database_url: str, tmp_path: Path, relay_ca: RelayCA) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        # domain checks ask a DNS server of the test's own (tests/support/dns.py); by
        # default a loopback port where nothing answers: never the machine's resolvers
        dns_resolvers="127.0.0.1:9",
        dns_timeout_seconds=1,
        inbound_host="mx.postroute.test",
        relay_ca_file=relay_ca.ca_file,
        smtp_timeout_seconds=3,
    )


@pytest.fixture
async def runtime(settings: Settings, clock: FakeClock) -> AsyncIterator[Runtime]:
    if BACKEND != "sqlite":
        await _truncate(settings.db_url)
    rt = Runtime.build(settings, clock=clock)
    yield rt
    await rt.close()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://postroute.test") as c:
        yield c


@dataclass(frozen=True)
class Tenant:
    account_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_tenant(
    runtime: Runtime, name: str, *, require_verified_domain: bool = False
) -> Tenant:
    """An account and a key. Most tests send from domains they never verify: the account
    does not require a verified From domain unless asked (new accounts do)."""
    async with runtime.sessions() as session:
        account = await accounts.create_account(session, name, runtime.clock)
        account.require_verified_domain = require_verified_domain
        key = await accounts.create_key(session, account.id, "test", runtime.clock)
        await session.commit()
    return Tenant(account.id, key.plaintext)


@pytest.fixture
async def tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime, "acme")


@pytest.fixture
async def other_tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime, "globex")
