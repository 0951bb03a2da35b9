"""schemathesis against the API, in process and with every check it has (`--checks all`):
each documented operation gets examples, boundary values (coverage) and generated valid
and invalid requests, authenticated as one tenant, against a real database.

The application runs on the test's event loop with the fixture runtime; schemathesis
drives it from a worker thread through its ASGI transport, whose calls :class:`OnLoop`
hands over to that loop. ``POSTROUTE_SCHEMATHESIS_EXAMPLES`` raises the number of
examples per operation (the default keeps the run well under a minute);
``POSTROUTE_SCHEMATHESIS_SEED`` changes the seed (fixed by default, so that a failure
is reproducible).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import schemathesis
from schemathesis.engine import Status, events, from_schema

from postroute.api.app import create_app
from postroute.runtime import Runtime
from tests.conftest import Tenant

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

EXAMPLES = int(os.environ.get("POSTROUTE_SCHEMATHESIS_EXAMPLES", "25"))
SEED = int(os.environ.get("POSTROUTE_SCHEMATHESIS_SEED", "20261204"))

# Where a valid request may still be refused: rules JSON Schema cannot say. The refusal is a
# 422 naming the field (tested in tests/messages and tests/accounts); every other check stays.
NO_POSITIVE_CHECK = [
    # addresses are checked as a mail server would (a real domain, lengths, IDNA...)
    ("/v1/send", "POST"),
    ("/v1/send/batch", "POST"),
    # host bits of a network must be zero; networks of two accounts must not overlap
    ("/v1/ip-credentials", "POST"),
    # a cursor is opaque: only a next_cursor the API gave is one
    ("/v1/messages", "GET"),
]


class OnLoop:
    """An ASGI application that runs ``app`` on ``loop``, whichever loop calls it.

    schemathesis calls ASGI applications on an event loop of its own, in another thread;
    the runtime's database connections belong to the test's loop."""

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.loop = app, loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the fixture owns the runtime: nothing to start
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        caller = asyncio.get_running_loop()

        async def on_caller(coro: Awaitable[Any]) -> Any:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, caller))  # type: ignore[arg-type]

        async def receive_there() -> Message:
            message: Message = await on_caller(receive())
            return message

        async def send_there(message: Message) -> None:
            await on_caller(send(message))

        handled = asyncio.run_coroutine_threadsafe(
            self.app(scope, receive_there, send_there),  # type: ignore[arg-type]
            self.loop,
        )
        await asyncio.wrap_future(handled)


def config(tenant: Tenant) -> schemathesis.Config:
    operations: list[dict[str, Any]] = [
        # connects to the pool's relay (random hosts here): tested in tests/pools
        {"include-path": "/v1/smtp-pools/{pool_id}/test", "enabled": False},
    ]
    for path, method in NO_POSITIVE_CHECK:
        operations.append(
            {
                "include-path": path,
                "include-method": method,
                "checks": {"positive_data_acceptance": {"enabled": False}},
            }
        )
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": tenant.headers,
            "checks": {"enabled": True},
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "cache": {"enabled": False},
            "workers": 1,
            "operations": operations,
        }
    )


def run(app: OnLoop, tenant: Tenant) -> tuple[list[str], int]:
    """Every failed check, with its reproduction and the answer; and how many operations
    ran."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config(tenant))
    problems: list[str] = []
    tested: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.status != Status.SKIP:
            tested.add(str(event.label))
        if isinstance(event, events.ScenarioFinished) and event.status == Status.FAILURE:
            problems.extend(_failures(event))
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"schemathesis error: {event}")
    return problems, len(tested)


def _failures(event: events.ScenarioFinished) -> list[str]:
    found = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            if check.status != Status.FAILURE or check.failure_info is None:
                continue
            failure = check.failure_info.failure
            interaction = event.recorder.interactions.get(case_id)
            answer = ""
            if interaction is not None and interaction.response is not None:
                response = interaction.response
                answer = f"\n  -> {response.status_code} {response.content[:300]!r}"
            found.append(
                f"{event.label} [{check.name}] {failure.title}: {failure.message}\n"
                f"  {check.failure_info.code_sample}{answer}"
            )
    return found


async def test_every_check_passes_on_every_operation(
    runtime: Runtime, tenant: Tenant, client: httpx.AsyncClient, closed_port: int
) -> None:
    # A pool named as in the documented examples, whose relay refuses connections: sends
    # are queued (no worker runs here) and nothing leaves the machine.
    pool = {"name": "ses", "host": "127.0.0.1", "port": closed_port, "encryption": "none"}
    created = await client.post("/v1/smtp-pools", json=pool, headers=tenant.headers)
    assert created.status_code == 201, created.text
    app = OnLoop(create_app(runtime), asyncio.get_running_loop())
    problems, operations = await asyncio.to_thread(run, app, tenant)
    assert not problems, "\n".join(problems)
    assert operations >= 16  # all but the connection test
