"""``postroute smtp`` (the submission listeners alone) and ``postroute ip-credentials ...``."""

from __future__ import annotations

from typing import Annotated

import typer

from postroute.accounts import ip_credentials
from postroute.cli.common import resolve_account, run, runtime
from postroute.cli.run import forever
from postroute.process import Parts

ip_credentials_app = typer.Typer(
    help="Networks allowed to submit over SMTP without AUTH (as Postfix's mynetworks).",
    no_args_is_help=True,
)
AccountOpt = Annotated[str | None, typer.Option("--account", help="Account name or id.")]


def smtp() -> None:
    """Only the SMTP submission listeners (scale-out: run any number, against PostgreSQL)."""
    forever(Parts(api=False, worker=False, smtp=True))


@ip_credentials_app.command("add")
def add(
    cidr: Annotated[str, typer.Argument(help="A network (10.0.0.0/24) or one address.")],
    account: AccountOpt = None,
    description: Annotated[str, typer.Option("--description")] = "",
) -> None:
    """Let clients from CIDR send without AUTH (and without STARTTLS) for the account."""

    async def go() -> str:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            row = await ip_credentials.add(session, acct.id, cidr, description, rt.clock)
            await session.commit()
            return f"{row.id}  {row.cidr}  {acct.name}"

    typer.echo(run(go))


@ip_credentials_app.command("list")
def list_credentials(account: AccountOpt = None) -> None:
    """List the account's IP credentials."""

    async def go() -> list[str]:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            rows = await ip_credentials.list_for(session, acct.id)
            return [f"{r.id}  {r.cidr}  {r.description}".rstrip() for r in rows]

    lines = run(go)
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo("no IP credentials: add one with `postroute ip-credentials add CIDR`")


@ip_credentials_app.command("remove")
def remove(credential_id: str, account: AccountOpt = None) -> None:
    """Remove an IP credential: new connections from that network need AUTH again."""

    async def go() -> None:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            await ip_credentials.remove(session, acct.id, credential_id)
            await session.commit()

    run(go)
    typer.echo(f"removed {credential_id}")
