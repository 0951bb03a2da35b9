"""``postroute pools list|add|test``."""

from __future__ import annotations

from typing import Annotated

import typer

from postroute.cli.common import fail, resolve_account, run, runtime, validated
from postroute.pools import service
from postroute.pools.probe import ProbeResult, probe
from postroute.pools.schemas import PoolCreate, PoolTestRequest

app = typer.Typer(help="Manage SMTP pools (upstream relays).", no_args_is_help=True)
AccountOpt = Annotated[str | None, typer.Option("--account", help="Account name or id.")]


@app.command("list")
def list_pools(account: AccountOpt = None) -> None:
    """List the account's pools with health and today's usage."""

    async def go() -> list[str]:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            pools = await service.list_pools(session, acct.id)
            lines = []
            for v in await service.views(session, pools, rt.clock):
                flags = ("default " if v.is_default else "") + ("" if v.is_active else "inactive")
                limit = v.daily_limit if v.daily_limit is not None else "-"
                lines.append(
                    f"{v.id}  {v.name}  {v.host}:{v.port} ({v.encryption})  prio {v.priority}  "
                    f"{v.health.state}  sent today {v.usage.sent_today}/{limit}  {flags}".rstrip()
                )
            return lines

    lines = run(go)
    for line in lines:
        typer.echo(line)
    if not lines:
        typer.echo("no SMTP pools yet: add one with `postroute pools add`")


@app.command("add")
def add_pool(
    name: Annotated[str, typer.Option("--name")],
    host: Annotated[str, typer.Option("--host")],
    port: Annotated[int, typer.Option("--port")] = 587,
    username: Annotated[str | None, typer.Option("--username")] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Prompted for when --username is given.")
    ] = None,
    encryption: Annotated[str, typer.Option("--encryption", help="tls | ssl | none")] = "tls",
    default: Annotated[bool, typer.Option("--default")] = False,
    inactive: Annotated[bool, typer.Option("--inactive")] = False,
    priority: Annotated[int, typer.Option("--priority")] = 100,
    no_failover: Annotated[bool, typer.Option("--no-failover")] = False,
    daily_limit: Annotated[int | None, typer.Option("--daily-limit")] = None,
    per_second: Annotated[int | None, typer.Option("--rate-per-second")] = None,
    per_minute: Annotated[int | None, typer.Option("--rate-per-minute")] = None,
    max_connections: Annotated[int, typer.Option("--max-connections")] = 4,
    from_email: Annotated[str | None, typer.Option("--from-email")] = None,
    no_verify_tls: Annotated[bool, typer.Option("--no-verify-tls")] = False,
    account: AccountOpt = None,
) -> None:
    """Add an SMTP pool. The password is encrypted at rest and never printed."""
    if username and password is None:
        password = typer.prompt("Relay password", hide_input=True)
    body: dict[str, object] = {
        "name": name,
        "host": host,
        "port": port,
        "username": username,
        "password": password,
        "encryption": encryption,
        "verify_tls": not no_verify_tls,
        "is_active": not inactive,
        "is_default": default,
        "priority": priority,
        "failover": not no_failover,
        "daily_limit": daily_limit,
        "max_connections": max_connections,
        "from_email": from_email,
    }
    if per_second is not None or per_minute is not None:
        body["rate_limit"] = {"per_second": per_second, "per_minute": per_minute}
    data = validated(lambda: PoolCreate.model_validate(body))

    async def go() -> str:
        async with runtime() as rt, rt.sessions() as session:
            acct = await resolve_account(session, account)
            pool = await service.create_pool(session, acct.id, data, rt.box, rt.clock)
            await session.commit()
            return f"{pool.id}  {pool.name}" + ("  (default)" if pool.is_default else "")

    typer.echo(run(go))


@app.command("test")
def test_pool(
    pool: Annotated[str, typer.Argument(help="Pool id or name.")],
    recipient: Annotated[
        str | None, typer.Option("--recipient", help="Also send a test message.")
    ] = None,
    account: AccountOpt = None,
) -> None:
    """Connect, EHLO, TLS, AUTH (and send a test message with --recipient)."""
    if recipient is not None:
        recipient = validated(lambda: PoolTestRequest(recipient=recipient)).recipient

    async def go() -> ProbeResult:
        async with runtime() as rt:
            async with rt.sessions() as session:
                acct = await resolve_account(session, account)
                found = await service.find_pool(session, acct.id, pool)
                if found is None:
                    fail(f"no SMTP pool {pool!r}")
                relay, sender, pool_id = (
                    service.relay_config(found, rt.box),
                    found.from_email,
                    found.id,
                )
            result = await probe(relay, rt.client_options, recipient=recipient, sender=sender)
            async with rt.sessions() as session:
                await service.record_probe(session, acct.id, pool_id, result, rt.clock)
                await session.commit()
            return result

    result = run(go)
    if result.success:
        typer.echo(f"OK  {result.message}  ({result.latency_ms} ms)")
        return
    typer.echo(f"FAILED  {result.error_code}: {result.error_detail}  ({result.latency_ms} ms)")
    raise typer.Exit(1)
