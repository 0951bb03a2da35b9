"""The ``postroute`` command line. Entry points wire things together; no business logic here."""

from __future__ import annotations

from typing import Annotated

import typer

from postroute import __version__
from postroute.cli import admin, domains, pools, run, send, smtp, suppressions

app = typer.Typer(
    name="postroute",
    help="Self-hosted transactional email: HTTP and SMTP ingress, SMTP pools, durable delivery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Exit status: 0 done; 1 refused (nothing of that name, already exists, not "
    "initialised, a failed relay test); 2 invalid input; serve, smtp and worker: 70 when a "
    "part failed to stop in time, 74 after a failed fsync of the database.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"postroute {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Options before the command: --version."""


app.command("init")(admin.init)
app.command("migrate")(run.migrate)
app.command("serve")(run.serve)
app.command("api")(run.api)
app.command("worker")(run.worker)
app.command("smtp")(smtp.smtp)
app.command("send")(send.send)
app.add_typer(admin.accounts_app, name="accounts")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(pools.app, name="pools")
app.add_typer(domains.app, name="domains")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(smtp.ip_credentials_app, name="ip-credentials")


def main() -> None:
    app()
