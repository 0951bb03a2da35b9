"""The HTTP API's rules for SMTP mail: every problem in one 5xx, nothing stored; a
database in trouble is a 451, never a 250."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from postroute.db import create_engine, session_factory
from postroute.runtime import Runtime
from postroute.smtp import replies
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.smtp.conftest import BASIC, Ports, RawClient, message, queued_id, submit
from tests.support.relay import RecordingRelay

pytestmark = pytest.mark.usefixtures("loopback_credential")


FROM = "From: shop@example.com"
SUBJECT = "Subject: Hello"
CASES = {
    "no From (the pool has no from_email)": (
        message(SUBJECT),
        ["missing From header (and the pool has no from_email)"],
    ),
    "invalid From": (
        message("From: Shop <shop@example..com>", SUBJECT),
        ["From header: invalid email address: "],
    ),
    "a control character in a metadata value": (
        message(FROM, SUBJECT, "X-Postroute-Metadata-order: 12\x0b34"),
        [
            "X-Postroute-Metadata-order: must not contain control characters (U+000B); "
            "tab is allowed"
        ],
    ),
    "no Subject": (message(FROM), ["missing Subject header"]),
    "empty Subject": (message(FROM, "Subject:   "), ["empty Subject"]),
    "no body": (message(FROM, SUBJECT, body=" \r\n\r\n"), ["the message has no body"]),
    "six tags": (
        message(FROM, SUBJECT, "X-Postroute-Tags: a, b, c, d, e, f"),
        ["at most 5 tags in X-Postroute-Tags, got 6"],
    ),
    "unknown pool": (
        message(FROM, SUBJECT, "X-Postroute-Pool: nope"),
        ["X-Postroute-Pool: no SMTP pool with id or name 'nope'"],
    ),
    "bad control values": (
        message(FROM, SUBJECT, "X-Postroute-Track-Opens: yes", "X-Postroute-Tag: typo"),
        [
            "X-Postroute-Track-Opens must be true or false, not 'yes'",
            "unknown header X-Postroute-Tag",
        ],
    ),
}


@pytest.mark.parametrize("case", CASES)
async def test_each_validation_failure_is_550_with_its_reason(
    case: str,
    ports: Ports,
    raw_clients: list[RawClient],
    relay_pool: dict[str, Any],
    client: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    data, reasons = CASES[case]
    code, text = await submit(ports, raw_clients, data)
    assert code == 550, text
    assert text.startswith("5.7.1 ")
    for reason in reasons:
        assert reason in text, (reason, text)
    listed = await client.get("/v1/messages", headers=tenant.headers)
    assert listed.json()["data"] == []


async def test_every_reason_at_once(
    ports: Ports, raw_clients: list[RawClient], relay_pool: dict[str, Any]
) -> None:
    data = message("X-Postroute-Tags: a, b, c, d, e, f", "X-Postroute-Pool: nope", body="\r\n")
    code, text = await submit(ports, raw_clients, data)
    assert code == 550
    assert text == (
        "5.7.1 missing From header (and the pool has no from_email); missing Subject header; "
        "the message has no body; at most 5 tags in X-Postroute-Tags, got 6; "
        "X-Postroute-Pool: no SMTP pool with id or name 'nope'"
    )


async def test_no_pool_at_all_is_refused(ports: Ports, raw_clients: list[RawClient]) -> None:
    code, text = await submit(ports, raw_clients, BASIC)
    assert code == 550 and "no active SMTP pool" in text


async def test_missing_from_takes_the_pools_from_email(
    ports: Ports,
    raw_clients: list[RawClient],
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
) -> None:
    await add_pool(client, tenant, relay.port, from_email="noreply@example.com")
    code, text = await submit(ports, raw_clients, message("To: customer@example.org", SUBJECT))
    assert code == 250, text
    reply = await client.get(f"/v1/messages/{queued_id(text)}/raw", headers=tenant.headers)
    assert b"\r\nFrom: noreply@example.com\r\n" in reply.content
    detail = await client.get(f"/v1/messages/{queued_id(text)}", headers=tenant.headers)
    assert detail.json()["from"] == "noreply@example.com"


async def test_database_trouble_is_451_never_250(
    ports: Ports,
    raw_clients: list[RawClient],
    runtime: Runtime,
    relay_pool: dict[str, Any],
    closed_port: int,
    client: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    raw = await RawClient.connect(ports.starttls)
    raw_clients.append(raw)
    await raw.command("EHLO app.example.com")
    assert (await raw.command("MAIL FROM:<shop@example.com>"))[0] == 250
    assert (await raw.command("RCPT TO:<customer@example.org>"))[0] == 250
    # The database goes away between RCPT and the end of DATA: a real, unreachable server.
    healthy = runtime.sessions
    dead = create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{closed_port}/postroute")
    runtime.sessions = session_factory(dead)
    try:
        assert (await raw.command("DATA"))[0] == 354
        await raw.send(BASIC + b".\r\n")
        code, text = await raw.reply()
    finally:
        runtime.sessions = healthy
        await dead.dispose()
    assert (code, text) == (451, replies.S451_TRANSIENT.message.decode())
    assert (await client.get("/v1/messages", headers=tenant.headers)).json()["data"] == []
    code, text = await raw.command("MAIL FROM:<shop@example.com>")  # the session goes on
    assert code == 250


FAIL_SQLITE = (
    "CREATE TRIGGER injected_failure BEFORE INSERT ON messages "
    "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
)
FAIL_PG = (
    "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
    "CREATE TRIGGER injected_failure BEFORE INSERT ON messages "
    "FOR EACH ROW EXECUTE FUNCTION injected_failure()",
)


async def test_a_failed_commit_is_451_and_stores_nothing(
    ports: Ports,
    raw_clients: list[RawClient],
    runtime: Runtime,
    relay_pool: dict[str, Any],
    client: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    """The pools are cached (a first message went through), so the failure is the group
    commit's own (on SQLite, in the writer's thread): the database refuses the insert."""
    raw = await RawClient.connect(ports.starttls)
    raw_clients.append(raw)
    await raw.command("EHLO app.example.com")

    async def send() -> tuple[int, str]:
        assert (await raw.command("MAIL FROM:<shop@example.com>"))[0] == 250
        assert (await raw.command("RCPT TO:<customer@example.org>"))[0] == 250
        assert (await raw.command("DATA"))[0] == 354
        await raw.send(BASIC + b".\r\n")
        return await raw.reply()

    first = await send()
    assert first[0] == 250, first
    postgres = runtime.engine.dialect.name == "postgresql"
    async with runtime.engine.begin() as conn:
        for ddl in FAIL_PG if postgres else (FAIL_SQLITE,):
            await conn.execute(sa.text(ddl))
    try:
        code, text = await send()
    finally:
        async with runtime.engine.begin() as conn:
            await conn.execute(
                sa.text("DROP TRIGGER injected_failure" + (" ON messages" * postgres))
            )
            if postgres:
                await conn.execute(sa.text("DROP FUNCTION injected_failure()"))
    assert (code, text) == (451, replies.S451_TRANSIENT.message.decode())
    assert "injected" not in text
    third = await send()  # the session goes on, and the database is well again
    assert third[0] == 250, third
    listed = (await client.get("/v1/messages", headers=tenant.headers)).json()["data"]
    assert sorted(m["id"] for m in listed) == sorted([queued_id(first[1]), queued_id(third[1])])
    async with runtime.engine.connect() as conn:
        contents = await conn.scalar(sa.text("SELECT count(*) FROM message_contents"))
        queued = await conn.scalar(sa.text("SELECT count(*) FROM deliveries"))
    assert (contents, queued) == (2, 2)
