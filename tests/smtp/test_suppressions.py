"""Over SMTP, a message none of whose recipients may be mailed is refused with 550
5.7.1 (nothing stored); with others left, the 250 says which recipient was not sent."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Tenant
from tests.smtp.conftest import Ports, RawClient
from tests.suppressions.test_sending import suppress


async def smtp_send(ports: Ports, opened: list[RawClient], rcpts: list[str]) -> tuple[int, str]:
    raw = await RawClient.connect(ports.starttls)
    opened.append(raw)
    await raw.command("EHLO app.example.com")
    assert (await raw.command("MAIL FROM:<shop@example.com>"))[0] == 250
    for rcpt in rcpts:
        assert (await raw.command(f"RCPT TO:<{rcpt}>"))[0] == 250
    assert (await raw.command("DATA"))[0] == 354
    head = f"From: shop@example.com\r\nTo: {', '.join(rcpts)}\r\nSubject: Hi\r\n\r\nHello\r\n"
    await raw.send(head.encode() + b".\r\n")
    return await raw.reply()


@pytest.mark.usefixtures("relay_pool", "loopback_credential")
async def test_smtp_refuses_a_message_whose_only_recipient_is_suppressed(
    ports: Ports, raw_clients: list[RawClient], client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await suppress(client, tenant, "gone@example.org")
    code, text = await smtp_send(ports, raw_clients, ["gone@example.org"])
    assert code == 550, text
    assert "5.7.1" in text and "gone@example.org (manual)" in text
    listed = await client.get("/v1/messages", headers=tenant.headers)
    assert listed.json()["data"] == []  # refused: nothing stored
    code, text = await smtp_send(ports, raw_clients, ["gone@example.org", "ok@example.org"])
    assert code == 250, text
    assert "Not sent to <gone@example.org>: on the suppression list (manual)" in text
