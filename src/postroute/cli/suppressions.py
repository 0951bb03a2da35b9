"""``postroute suppressions import|list|add|remove``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from postroute.cli.common import INVALID, fail, resolve_account, run, runtime
from postroute.kit.text import email_address
from postroute.suppressions import imports, service

app = typer.Typer(
    help="The suppression list: addresses the account does not mail.", no_args_is_help=True
)
AccountOpt = Annotated[str | None, typer.Option("--account", help="Account name or id.")]
EmailArg = Annotated[str, typer.Argument(help="The address.")]


def _checked(email: str) -> str:
    try:
        return email_address(email)
    except ValueError as exc:  # pydantic's error, a ValueError
        fail(str(exc), INVALID)


@app.command("import")
def import_file(
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV file: an `email` column (and optional `reason`) under a header "
            "row, or one address per line.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    account: AccountOpt = None,
) -> None:
    """Add every address of a CSV file. Each row is checked first: one bad row and
    nothing is imported (exit status 2, the bad rows listed with their line numbers)."""
    parsed = imports.parse(file.read_bytes())
    if parsed.bad_rows:
        for problem in parsed.problems:
            typer.echo(f"{file}: {problem}", err=True)
        more = parsed.bad_rows - len(parsed.problems)
        if more > 0:
            typer.echo(f"{file}: ... and {more} more bad rows", err=True)
        fail(f"{parsed.bad_rows} bad rows: nothing imported", INVALID)

    async def go() -> int:
        async with runtime() as rt:
            async with rt.sessions() as session:
                acct = await resolve_account(session, account)
            with typer.progressbar(length=len(parsed.rows), label="importing") as bar:
                return await service.add_many(rt, acct.id, parsed.rows, bar.update)

    done = run(go)
    typer.echo(
        f"imported {done} addresses (an address listed already keeps its entry if that "
        "lasts longer)"
    )


@app.command("list")
def list_entries(
    account: AccountOpt = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    email: Annotated[str | None, typer.Option(help="Part of the address.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
) -> None:
    """The newest entries first: address, reason, source, created, expires."""

    async def go() -> list[str]:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            found, _ = await service.page(
                session, acct.id, reason=reason, email=email, cursor=None, limit=limit
            )
            now = rt.clock.now()
            return [
                f"{s.email}  {s.reason}  {s.source}  {s.created_at:%Y-%m-%d %H:%M}  "
                + (
                    "never expires"
                    if s.expires_at is None
                    else f"{'expires' if s.expires_at > now else 'expired'} {s.expires_at:%Y-%m-%d}"
                )
                for s in found
            ]

    lines = run(go)
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo("the suppression list is empty")


@app.command("add")
def add(email: EmailArg, account: AccountOpt = None) -> None:
    """Suppress an address by hand (reason `manual`, never expires)."""
    address = _checked(email)

    async def go() -> str:
        async with runtime() as rt:
            async with rt.sessions() as session:
                acct = await resolve_account(session, account)
            found = await service.add(rt, acct.id, address)
            return f"{found.email}: {found.reason}"

    typer.echo(run(go))


@app.command("remove")
def remove(email: EmailArg, account: AccountOpt = None) -> None:
    """Take an address off the list: it is mailed again."""

    async def go() -> None:
        async with runtime() as rt:
            async with rt.sessions() as session:
                acct = await resolve_account(session, account)
            await service.remove(rt, acct.id, email)

    run(go)
    typer.echo(f"removed {email}")
