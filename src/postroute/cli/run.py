"""``postroute migrate`` and the long-running processes: ``serve``, ``api``, ``worker``."""

from __future__ import annotations

import asyncio
import gc

import typer
import uvloop

from postroute import migrate as migrations
from postroute.cli.common import fail, run, settings
from postroute.config import Settings
from postroute.process import Parts, serve_forever
from postroute.runtime import Runtime


def migrate() -> None:
    """Apply database migrations (Alembic) up to the newest schema."""

    config = settings()

    async def go() -> str:
        rt = Runtime.build(config)
        try:
            await migrations.upgrade(rt.engine)
        finally:
            await rt.close()
        return config.db_url.split("://", 1)[0]

    typer.echo(f"database is up to date ({run(go)})")


def serve() -> None:
    """HTTP API, SMTP submission and the delivery worker; the worker in child processes
    (POSTROUTE_SERVE_WORKERS of them) when the machine has several CPUs
    (POSTROUTE_SERVE_WORKER_PROCESS)."""
    config = settings(create=True)  # the one command besides init that makes a data dir
    children = config.serve_workers if config.worker_in_own_process else 0
    forever(Parts(api=True, worker=True, smtp=True, worker_processes=children), config)


def api() -> None:
    """Only the HTTP API (scale-out: run any number, against PostgreSQL)."""
    forever(Parts(api=True, worker=False))


def worker() -> None:
    """Only the delivery worker (scale-out: run any number, against PostgreSQL)."""
    forever(Parts(api=False, worker=True))


def forever(parts: Parts, config: Settings | None = None) -> None:
    """Run ``parts`` until stopped; exit status 74 (EX_IOERR) when they stop because an
    fsync of the database failed.

    Once they are up, what starting built (modules, tables, schemas, the app, the pools),
    which lives as long as the process, is frozen out of the cyclic collector's sight
    (``gc.freeze``): the collections that each request's garbage sets off no longer walk
    it every time (the API's CPU -23 %, docs/performance.md). Only here, in a process of
    its own: a test running the parts in its process keeps its collector as it is."""
    config = config or settings()
    uvloop.install()
    try:
        status = asyncio.run(serve_forever(config, parts, started=gc.freeze))
    except OSError as exc:  # a port in use, an unreadable certificate...
        fail(f"cannot start: {exc.strerror or exc}")
    if status:
        raise typer.Exit(status)
