"""Every limit answers with a clear reply: size (SIZE= and DATA), recipients, messages per
connection, connections per IP, command line length, idle timeout. The client is
covered by an IP credential, so these tests speak plain SMTP on the STARTTLS port."""

from __future__ import annotations

import httpx
import pytest

from postroute.smtp import replies
from tests.conftest import Tenant
from tests.smtp.conftest import BASIC, Ports, RawClient, queued_id

pytestmark = pytest.mark.usefixtures("relay_pool", "loopback_credential")


async def session(ports: Ports, opened: list[RawClient]) -> RawClient:
    raw = await RawClient.connect(ports.starttls)
    opened.append(raw)
    assert (await raw.command("EHLO app.example.com"))[0] == 250
    return raw


async def transaction(raw: RawClient, data: bytes, *rcpts: str) -> tuple[int, str]:
    assert (await raw.command("MAIL FROM:<shop@example.com>"))[0] == 250
    for rcpt in rcpts or ("customer@example.org",):
        assert (await raw.command(f"RCPT TO:<{rcpt}>"))[0] == 250
    assert (await raw.command("DATA"))[0] == 354
    await raw.send(data + b".\r\n")
    return await raw.reply()


def expect(reply: tuple[int, str], expected: replies.Reply) -> None:
    assert reply == (expected.code, expected.message.decode()), reply


@pytest.mark.parametrize("smtp_overrides", [{"smtp_max_message_bytes": 2000}], indirect=True)
async def test_over_size_is_552_and_the_session_goes_on(
    ports: Ports, raw_clients: list[RawClient], client: httpx.AsyncClient, tenant: Tenant
) -> None:
    raw = await session(ports, raw_clients)
    code, text = await raw.command("EHLO again.example.com")
    assert "SIZE 2000" in text.split("\n")
    expect(
        await raw.command("MAIL FROM:<shop@example.com> SIZE=2001"), replies.S552_TOO_BIG(max=2000)
    )

    big = BASIC + b"x" * 2000 + b"\r\n"
    expect(await transaction(raw, big), replies.S552_TOO_BIG(max=2000))
    listed = (await client.get("/v1/messages", headers=tenant.headers)).json()["data"]
    assert listed == []

    code, text = await transaction(raw, BASIC)  # same connection, a message that fits
    assert code == 250, text


@pytest.mark.parametrize("smtp_overrides", [{"smtp_max_recipients": 3}], indirect=True)
async def test_too_many_recipients_is_452(
    ports: Ports, raw_clients: list[RawClient], client: httpx.AsyncClient, tenant: Tenant
) -> None:
    raw = await session(ports, raw_clients)
    assert (await raw.command("MAIL FROM:<shop@example.com>"))[0] == 250
    for i in range(3):
        assert (await raw.command(f"RCPT TO:<r{i}@example.org>"))[0] == 250
    expect(await raw.command("RCPT TO:<r3@example.org>"), replies.S452_TOO_MANY_RECIPIENTS(max=3))
    assert (await raw.command("DATA"))[0] == 354
    await raw.send(BASIC + b".\r\n")
    code, text = await raw.reply()
    assert code == 250 and text.endswith("of 3 messages queued")  # the accepted three


@pytest.mark.parametrize("smtp_overrides", [{"smtp_max_messages_per_connection": 2}], indirect=True)
async def test_too_many_messages_on_one_connection_is_421(
    ports: Ports, raw_clients: list[RawClient]
) -> None:
    raw = await session(ports, raw_clients)
    for _ in range(2):
        assert (await transaction(raw, BASIC))[0] == 250
    reply = await raw.command("MAIL FROM:<shop@example.com>")
    expect(reply, replies.S421_TOO_MANY_MESSAGES(host="mx.postroute.test"))
    assert await raw.closed()
    again = await session(ports, raw_clients)  # a new connection may send again
    assert (await transaction(again, BASIC))[0] == 250


@pytest.mark.parametrize(
    "smtp_overrides", [{"smtp_max_connections_per_ip_per_minute": 2}], indirect=True
)
async def test_too_many_connections_per_minute_is_421(
    ports: Ports, raw_clients: list[RawClient]
) -> None:
    for _ in range(2):
        raw_clients.append(await RawClient.connect(ports.starttls))
    refused = await RawClient.connect(ports.starttls, greeting=False)
    raw_clients.append(refused)
    expect(await refused.reply(), replies.S421_TOO_MANY_CONNECTIONS(host="mx.postroute.test"))
    assert await refused.closed()


@pytest.mark.parametrize("smtp_overrides", [{"smtp_max_command_bytes": 600}], indirect=True)
async def test_command_line_too_long_is_500(ports: Ports, raw_clients: list[RawClient]) -> None:
    raw = await session(ports, raw_clients)
    expect(await raw.command("NOOP " + "x" * 700), replies.S500_LINE_TOO_LONG)
    expect(await raw.command("NOOP " + "x" * 100_000), replies.S500_LINE_TOO_LONG)
    expect(await raw.command("NOOP"), replies.S250_OK)  # still usable


@pytest.mark.parametrize("smtp_overrides", [{"smtp_idle_timeout_seconds": 0.3}], indirect=True)
async def test_idle_timeout_is_421_before_closing(
    ports: Ports, raw_clients: list[RawClient]
) -> None:
    raw = await session(ports, raw_clients)
    expect(await raw.reply(), replies.S421_TIMEOUT(host="mx.postroute.test"))
    assert await raw.closed()


async def test_enhanced_status_codes_on_every_reply(
    ports: Ports, raw_clients: list[RawClient]
) -> None:
    raw = await session(ports, raw_clients)
    expect(await raw.command("NOOP"), replies.S250_OK)
    expect(
        await raw.command("RCPT TO:<a@example.org>"),
        replies.Reply(503, "5.5.1", "Error: need MAIL command"),
    )
    assert (await raw.command("BOGUS"))[1].startswith("5.5.2 ")
    expect(await raw.command("RCPT"), replies.Reply(503, "5.5.1", "Error: need MAIL command"))
    expect(await raw.command("MAIL FROM:<shop@example.com>"), replies.S250_SENDER_OK)
    reply = await raw.command("RCPT TO:<not an address>")
    assert reply[0] == 553 and reply[1].startswith("5.1.3 ")
    reply = await raw.command("RCPT TO:<someone@localhost>")
    assert reply[0] == 553 and reply[1].startswith("5.1.3 Invalid recipient address: ")
    expect(await raw.command("RSET"), replies.S250_OK)
    expect(await raw.command("QUIT"), replies.S221_BYE)


async def test_queued_reply_names_the_message(
    ports: Ports, raw_clients: list[RawClient], client: httpx.AsyncClient, tenant: Tenant
) -> None:
    raw = await session(ports, raw_clients)
    code, text = await transaction(raw, BASIC)
    assert code == 250 and text == f"2.0.0 Message queued as {queued_id(text)}"
    reply = await client.get(f"/v1/messages/{queued_id(text)}", headers=tenant.headers)
    assert reply.status_code == 200
