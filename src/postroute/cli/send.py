"""``postroute send``: queue one message from the shell, optionally wait for the outcome."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from postroute.cli.common import fail, resolve_account, run, runtime, validated
from postroute.messages import service, views
from postroute.messages.schemas import SendRequest
from postroute.messages.submit import Submitter
from postroute.runtime import Runtime

FINAL = {"sent", "bounced", "dropped", "delivered"}
MAX_WAIT = 24 * 3600.0  # seconds: longer is a typo (a worker retries for days, not --wait)


def _wait_seconds(value: float) -> float:
    if not 0 <= value <= MAX_WAIT:  # NaN too
        raise typer.BadParameter(f"{value} is not between 0 and {MAX_WAIT:.0f} seconds")
    return value


def send(
    to: Annotated[list[str], typer.Option("--to", help="Recipient (repeat for several).")],
    subject: Annotated[str, typer.Option("--subject")],
    text: Annotated[str | None, typer.Option("--text")] = None,
    html: Annotated[str | None, typer.Option("--html")] = None,
    sender: Annotated[
        str | None, typer.Option("--from", help="Sender; default: the pool's from_email.")
    ] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Pool id or name.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag")] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            help="Seconds to wait for sent/bounced, 0 to 86400 (a worker must run).",
            callback=_wait_seconds,
        ),
    ] = 0.0,
    account: Annotated[str | None, typer.Option("--account")] = None,
) -> None:
    """Queue one message (one record per recipient) and print the message ids."""
    body: dict[str, object] = {"to": to, "subject": subject, "tags": tag or []}
    for key, value in (("from", sender), ("text", text), ("html", html), ("pool", pool)):
        if value is not None:
            body[key] = value
    request = validated(lambda: SendRequest.model_validate(body))

    async def go() -> list[str]:
        async with runtime() as rt:
            async with rt.sessions() as session:
                acct = await resolve_account(session, account)
            (reply,) = await Submitter(rt).submit(acct.id, service.drafts([request]))
            lines = [f"{m.id}  {m.to}  queued" for m in reply.messages]
            if wait <= 0:
                return lines
            return await _wait(rt, acct.id, [m.id for m in reply.messages], wait)

    for line in run(go):
        typer.echo(line)


async def _wait(rt: Runtime, account_id: str, ids: list[str], seconds: float) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        async with rt.sessions() as session:
            details = [await views.message_detail(session, account_id, i) for i in ids]
        if all(d.status in FINAL for d in details) or loop.time() >= deadline:
            break
        await asyncio.sleep(0.5)
    lines = [f"{d.id}  {d.to}  {d.status}  {d.last_reply or ''}".rstrip() for d in details]
    if any(d.status not in FINAL for d in details):
        lines.append("still waiting: is `postroute serve` or `postroute worker` running?")
    if any(d.status in ("bounced", "dropped") for d in details):
        for line in lines:
            typer.echo(line)
        fail("not every message was sent")
    return lines
