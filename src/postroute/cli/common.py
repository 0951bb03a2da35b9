"""Shared plumbing for commands: settings, runtime, error reporting."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors, migrate
from postroute.accounts import service as accounts
from postroute.api.errors import pydantic_details
from postroute.api.runtime import Runtime
from postroute.config import Settings
from postroute.models import Account

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def validated(build: Callable[[], T]) -> T:
    """Build a Pydantic model from options; invalid values exit with code 2 and the reasons."""
    try:
        return build()
    except ValidationError as exc:
        details = pydantic_details(exc.errors())
        fail("; ".join(f"{d['field'] or 'value'}: {d['message']}" for d in details), 2)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; domain and validation errors become a message and exit code 1."""
    try:
        return asyncio.run(_call(factory))
    except errors.DomainError as exc:
        detail = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in exc.details)
        fail(exc.message + (f" ({detail})" if detail else ""))
    except ValidationError as exc:
        details = pydantic_details(exc.errors())
        fail("; ".join(f"{d['field'] or 'value'}: {d['message']}" for d in details), 2)
    except KeyboardInterrupt:
        sys.exit(130)


async def _call(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


@asynccontextmanager
async def runtime() -> AsyncIterator[Runtime]:
    settings = Settings()
    rt = Runtime.build(settings)
    try:
        if settings.is_sqlite:  # the embedded database migrates itself
            await migrate.upgrade(rt.engine)
        yield rt
    finally:
        await rt.close()


async def resolve_account(session: AsyncSession, name: str | None) -> Account:
    """The named account, or the only one when there is just one."""
    if name:
        return await accounts.require_account(session, name)
    all_accounts = await accounts.list_accounts(session)
    if len(all_accounts) == 1:
        return all_accounts[0]
    if not all_accounts:
        raise errors.NotFound("no account yet: run `postroute init` first")
    raise errors.ValidationFailed("several accounts exist: choose one with --account NAME")
