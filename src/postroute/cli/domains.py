"""``postroute domains add|list|verify|rotate|remove``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from postroute.cli.common import resolve_account, run, runtime
from postroute.domains import service, verification
from postroute.domains.dns import Checker
from postroute.domains.names import unicode_name
from postroute.domains.records import txt_strings
from postroute.domains.service import DomainView
from postroute.runtime import Runtime

app = typer.Typer(
    help="Sending domains: DNS records to publish, verification, DKIM.", no_args_is_help=True
)
AccountOpt = Annotated[str | None, typer.Option("--account", help="Account name or id.")]
DomainArg = Annotated[str, typer.Argument(help="Domain name or id.")]


def _hosts(rt: Runtime) -> service.Hosts:
    return service.Hosts.of(rt.settings.bounce_host, rt.settings.public_url)


def _lines(shown: DomainView) -> list[str]:
    d = shown.domain
    name = d.name if unicode_name(d.name) == d.name else f"{d.name} ({unicode_name(d.name)})"
    rp = "verified" if d.return_path_verified else "not verified"
    out = [f"{d.id}  {name}  {d.status}  return path {d.return_path_sub}.{d.name}: {rp}"]
    for r in shown.records:
        need = "required" if r.required else "optional"
        value = txt_strings(r.value) if r.type == "TXT" else r.value
        out.append(f"  {r.type:<5} {r.name}  {value}")
        found = f" (found: {r.found})" if r.found and r.status != "verified" else ""
        out.append(f"        {r.purpose}, {need}: {r.status}{found}")
    return out


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The domain of your From addresses.")],
    ed25519: Annotated[bool, typer.Option("--ed25519", help="Also an Ed25519 key.")] = False,
    account: AccountOpt = None,
) -> None:
    """Add a domain: its DKIM key(s) and the DNS records to publish (then: verify)."""

    async def go() -> list[str]:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            algorithms = ["rsa", "ed25519"] if ed25519 else ["rsa"]
            shown = await service.add(
                session, acct.id, name, algorithms, rt.box, _hosts(rt), rt.clock
            )
            await session.commit()
            return _lines(shown)

    for line in run(go):
        typer.echo(line)


@app.command("list")
def list_domains(account: AccountOpt = None) -> None:
    """The account's domains, their records and what the last check found."""

    async def go() -> list[str]:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            return [line for v in await service.views(session, acct.id) for line in _lines(v)]

    lines = run(go)
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo("no domains yet: add one with `postroute domains add example.com`")


@app.command("verify")
def verify(domain: DomainArg, account: AccountOpt = None) -> None:
    """Check the domain's DNS records now."""

    async def go() -> list[str]:
        async with runtime() as rt:
            async with rt.sessions() as session:
                acct = await resolve_account(session, account)
                found = await service.require(session, acct.id, domain)
                before = await service.view(session, found)
            s = rt.settings
            checker = Checker(s.resolver_list, s.dns_timeout_seconds)
            results = await verification.check(checker, before.records)
            async with rt.sessions() as session:
                current = await service.view(
                    session, await service.require(session, acct.id, domain)
                )
                shown = await verification.apply_results(
                    session,
                    current,
                    results,
                    _hosts(rt),
                    rt.clock.now(),
                    timedelta(hours=s.domain_recheck_hours),
                )
                await session.commit()
            return _lines(shown)

    for line in run(go):
        typer.echo(line)


@app.command("rotate")
def rotate(domain: DomainArg, account: AccountOpt = None) -> None:
    """Start a DKIM key rotation: publish the new key's record, then verify."""

    async def go() -> list[str]:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            shown = await service.rotate(session, acct.id, domain, rt.box, _hosts(rt), rt.clock)
            await session.commit()
            return _lines(shown)

    for line in run(go):
        typer.echo(line)


@app.command("remove")
def remove(domain: DomainArg, account: AccountOpt = None) -> None:
    """Remove a domain: its mail is no longer signed."""

    async def go() -> None:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            await service.delete(session, acct.id, domain)
            await session.commit()

    run(go)
    typer.echo(f"removed {domain}")
