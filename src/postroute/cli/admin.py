"""``postroute init``, ``accounts ...`` and ``keys ...``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from postroute import errors
from postroute.accounts import service as accounts
from postroute.cli.common import INVALID, fail, one_line, resolve_account, run, runtime

accounts_app = typer.Typer(help="Manage accounts (tenants).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)

AccountOpt = Annotated[str | None, typer.Option("--account", help="Account name or id.")]
NAME_MAX = 200  # account and API key names


def init(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    if_needed: Annotated[
        bool, typer.Option("--if-needed", help="Do nothing (exit 0) when already initialised.")
    ] = False,
    account_name: Annotated[str, typer.Option("--account-name")] = "default",
    email: Annotated[str, typer.Option("--email", help="Dashboard login.")] = "admin@localhost",
) -> None:
    """Create the first account, a dashboard user and an API key; print the key once."""
    one_line(account_name, "--account-name", NAME_MAX)
    if "@" not in one_line(email, "--email", 320).strip("@"):
        fail(f"--email: {email!r} is not an email address", INVALID)

    async def go() -> accounts.InitResult | str:
        async with runtime(create=True) as rt, rt.sessions() as session:
            where = (
                f"data dir {rt.settings.data_dir.resolve()}"
                if rt.settings.database_url is None
                else "the database of POSTROUTE_DATABASE_URL"
            )
            if await accounts.is_initialised(session):
                return where
            try:
                result = await accounts.initialise(
                    session, rt.clock, account_name=account_name, email=email
                )
            except errors.Conflict:  # another init won meanwhile
                return where
            await session.commit()
            return result

    result = run(go)
    if isinstance(result, str):
        if if_needed:
            return
        fail(
            f"Postroute is already initialised ({result}); its first API key was printed "
            "then. For another key: `postroute keys create` (add --account NAME when there "
            "are several accounts). `postroute init --if-needed` does nothing when initialised."
        )
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "account_id": result.account.id,
                    "api_key": result.api_key,
                    "dashboard_email": result.dashboard_email,
                    "dashboard_password": result.dashboard_password,
                }
            )
        )
        return
    typer.echo(f"Account:            {result.account.name} ({result.account.id})")
    typer.echo(f"API key:            {result.api_key}")
    typer.echo(f"Dashboard login:    {result.dashboard_email}")
    typer.echo(f"Dashboard password: {result.dashboard_password}")
    typer.echo("Store the key and the password now: they are not shown again.")


@accounts_app.command("create")
def accounts_create(name: str) -> None:
    """Create an account and print its first API key."""
    one_line(name, "NAME", NAME_MAX)

    async def go() -> tuple[str, str]:
        async with runtime() as rt, rt.sessions() as session:
            account = await accounts.create_account(session, name, rt.clock)
            key = await accounts.create_key(session, account.id, "default", rt.clock)
            await session.commit()
            return account.id, key.plaintext

    account_id, key = run(go)
    typer.echo(f"Account: {name} ({account_id})\nAPI key: {key}")


@accounts_app.command("set")
def accounts_set(
    account: Annotated[str, typer.Argument(help="Account name or id.")],
    require_verified_domain: Annotated[
        bool | None,
        typer.Option(
            "--require-verified-domain/--no-require-verified-domain",
            help="From must be on a verified sending domain (on for new accounts).",
        ),
    ] = None,
    track_opens: Annotated[
        bool | None, typer.Option("--track-opens/--no-track-opens", help="Default of sends.")
    ] = None,
    track_clicks: Annotated[
        bool | None, typer.Option("--track-clicks/--no-track-clicks", help="Default of sends.")
    ] = None,
    unsubscribe_header: Annotated[
        bool | None,
        typer.Option(
            "--unsubscribe-header/--no-unsubscribe-header",
            help="List-Unsubscribe on sends that do not say (off for new accounts).",
        ),
    ] = None,
) -> None:
    """Change an account's settings; print them."""
    given = (require_verified_domain, track_opens, track_clicks, unsubscribe_header)
    if all(v is None for v in given):
        fail("nothing to change: give --require-verified-domain or another setting", INVALID)

    async def go() -> str:
        async with runtime() as rt, rt.sessions() as session:
            acct = await accounts.require_account(session, account)
            done = await accounts.update_settings(
                session,
                acct.id,
                require_verified_domain=require_verified_domain,
                track_opens=track_opens,
                track_clicks=track_clicks,
                unsubscribe_header=unsubscribe_header,
            )
            await session.commit()
            return (
                f"{done.name}: require_verified_domain={str(done.require_verified_domain).lower()} "
                f"track_opens={str(done.track_opens).lower()} "
                f"track_clicks={str(done.track_clicks).lower()} "
                f"unsubscribe_header={str(done.unsubscribe_header).lower()}"
            )

    typer.echo(run(go))


@accounts_app.command("list")
def accounts_list() -> None:
    """List accounts."""

    async def go() -> list[tuple[str, str, str]]:
        async with runtime() as rt, rt.sessions() as session:
            rows = await accounts.list_accounts(session)
            return [(a.id, a.name, a.created_at.isoformat()) for a in rows]

    for account_id, name, created in run(go):
        typer.echo(f"{account_id}  {name}  {created}")


@keys_app.command("create")
def keys_create(
    account: AccountOpt = None, name: Annotated[str, typer.Option("--name")] = "default"
) -> None:
    """Create an API key; it is printed once."""
    one_line(name, "--name", NAME_MAX)

    async def go() -> str:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            key = await accounts.create_key(session, acct.id, name, rt.clock)
            await session.commit()
            return f"{key.key.id}  {key.plaintext}"

    typer.echo(run(go))


@keys_app.command("list")
def keys_list(account: AccountOpt = None) -> None:
    """List API keys (prefixes only)."""

    async def go() -> list[str]:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            out = []
            for k in await accounts.list_keys(session, acct.id):
                state = "revoked" if k.revoked_at else "active"
                used = k.last_used_at.isoformat() if k.last_used_at else "never"
                out.append(f"{k.id}  {k.prefix}...  {k.name}  {state}  last used: {used}")
            return out

    for line in run(go):
        typer.echo(line)


@keys_app.command("revoke")
def keys_revoke(key_id: str, account: AccountOpt = None) -> None:
    """Revoke an API key: it stops working at once."""

    async def go() -> None:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            await accounts.revoke_key(session, acct.id, key_id, rt.clock)
            await session.commit()

    run(go)
    typer.echo(f"revoked {key_id}")
