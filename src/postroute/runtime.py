"""What a running process shares: settings, database, clock, secrets, relay client options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from postroute.config import Settings
from postroute.db import SessionFactory, create_engine, session_factory
from postroute.db.sqlite import writer as sqlite_writer
from postroute.db.sqlite.writer import SqliteWriter
from postroute.db.store import Store
from postroute.kit.clock import Clock, SystemClock
from postroute.kit.crypto import SecretBox
from postroute.kit.guard import AuthGuard
from postroute.relay.config import ClientOptions


def _no_op() -> None:
    return None


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    clock: Clock
    box: SecretBox
    client_options: ClientOptions
    redis: aioredis.Redis | None = None  # shared limits across workers when configured
    # Called after new mail is queued, so an in-process worker starts at once.
    wake_worker: Callable[[], None] = field(default=_no_op)
    # SQLite: whole write transactions in one hand-off, for the busiest writers.
    writer: SqliteWriter | None = None
    # Set when the process begins to stop: /readyz answers 503 from then on.
    stopping: bool = False
    # Limits on key guessing, shared by SMTP AUTH and HTTP Bearer authentication.
    guard: AuthGuard = field(init=False)
    # Where described writes go (SQLite: one hand-off to the writer thread).
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store(lambda: self.sessions, self.writer, self.engine.dialect)
        s = self.settings
        self.guard = AuthGuard(
            per_source=s.auth_failures_per_source,
            global_limit=s.auth_failures_global,
            slow=s.auth_slow_seconds,
            slow_max=s.auth_slow_max_seconds,
            clock=self.clock,
        )

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        engine = create_engine(settings.db_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            clock=clock or SystemClock(),
            box=SecretBox(settings.secret_keys),
            client_options=ClientOptions(
                timeout=settings.smtp_timeout_seconds,
                ca_file=settings.relay_ca_file,
                helo_name=settings.relay_helo_name,
            ),
            redis=aioredis.from_url(settings.redis_url) if settings.redis_url else None,
            writer=sqlite_writer.for_url(settings.db_url),
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.writer is not None:
            await self.writer.close()
        await self.engine.dispose()
