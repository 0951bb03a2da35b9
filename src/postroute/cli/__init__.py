"""The ``postroute`` command line. Entry points wire things together; no business logic here."""

from __future__ import annotations

import typer

from postroute.cli import admin, pools, run

app = typer.Typer(
    name="postroute",
    help="Self-hosted transactional email: HTTP and SMTP ingress, SMTP pools, durable delivery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("init")(admin.init)
app.command("migrate")(run.migrate)
app.command("serve")(run.serve)
app.command("api")(run.api)
app.command("worker")(run.worker)
app.add_typer(admin.accounts_app, name="accounts")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(pools.app, name="pools")


def main() -> None:
    app()
