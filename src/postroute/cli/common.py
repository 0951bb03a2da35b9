"""Shared plumbing for commands: settings, runtime, error reporting.

Exit status: 2 for invalid input (an option or setting that is malformed, out of range
or missing), 1 for a refused operation (nothing of that name, already exists, not
initialised, a relay test that failed)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import datadir, errors, migrate
from postroute.accounts import service as accounts
from postroute.api.errors import pydantic_details
from postroute.config import Settings
from postroute.models import Account
from postroute.runtime import Runtime

T = TypeVar("T")
INVALID = 2  # invalid input; a refused operation is 1


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def validated(build: Callable[[], T]) -> T:
    """Build a Pydantic model from options; invalid values exit with code 2 and the reasons."""
    try:
        return build()
    except ValidationError as exc:
        details = pydantic_details(exc.errors())
        fail("; ".join(f"{d['field'] or 'value'}: {d['message']}" for d in details), INVALID)


def one_line(value: str, option: str, max_length: int) -> str:
    """``value`` when it is one line of at most ``max_length`` characters; else exit 2."""
    if len(value) > max_length or any(c in value for c in "\r\n\x00"):
        fail(f"{option}: one line of at most {max_length} characters", INVALID)
    return value


def settings(*, create: bool = False) -> Settings:
    """The settings, checked before anything is opened. Without ``create`` (every
    command but ``init`` and ``serve``) a missing data dir is an error: the command
    would otherwise make an empty one wherever it was run."""
    try:
        result = Settings()
    except ValidationError as exc:
        reasons = (
            f"POSTROUTE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        fail("invalid setting: " + "; ".join(reasons), INVALID)
    if (result.tls_cert is None) != (result.tls_key is None):
        fail("set both POSTROUTE_TLS_CERT and POSTROUTE_TLS_KEY, or neither", INVALID)
    if result.data_dir.exists() and not result.data_dir.is_dir():
        fail(f"POSTROUTE_DATA_DIR {result.data_dir.resolve()} is not a directory", INVALID)
    if not create and result.database_url is None and not result.data_dir.exists():
        fail(datadir.missing_message(result.data_dir, "data_dir" in result.model_fields_set))
    raw = result.secret_key.get_secret_value() if result.secret_key is not None else ""
    if raw.strip() and not any(k.strip() for k in raw.split(",")):
        fail("POSTROUTE_SECRET_KEY holds no key", INVALID)
    return result


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; domain errors become their reasons (each once) and exit code 1,
    or 2 when the input was invalid."""
    try:
        return asyncio.run(_call(factory))
    except errors.DomainError as exc:
        code = INVALID if exc.code == errors.VALIDATION_FAILED else 1
        fail(reasons(exc.message, exc.details), code)
    except ValidationError as exc:
        details = pydantic_details(exc.errors())
        fail("; ".join(f"{d['field'] or 'value'}: {d['message']}" for d in details), INVALID)
    except KeyboardInterrupt:
        sys.exit(130)


def reasons(message: str, details: list[dict[str, Any]]) -> str:
    """Each reason once: the details when the message is one of them, the message alone
    when its one detail restates it, else the message and then the details."""
    listed = list(
        dict.fromkeys(
            f"{d['field']}: {d['message']}" if d.get("field") else str(d.get("message"))
            for d in details
        )
    )
    if any(d.get("message") == message for d in details):
        return "; ".join(listed)
    if len(listed) > 1:
        return f"{message}: {'; '.join(listed)}"
    return message


async def _call(factory: Callable[[], Awaitable[T]]) -> T:
    return await factory()


@asynccontextmanager
async def runtime(*, create: bool = False) -> AsyncIterator[Runtime]:
    """The process's runtime; ``create`` only for ``init`` (see :func:`settings`)."""
    config = settings(create=create)
    rt = Runtime.build(config)
    try:
        if config.is_sqlite:  # the embedded database migrates itself
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
