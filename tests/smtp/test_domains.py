"""Sending domains over SMTP: a verified domain's message is signed (folded headers and
an 8-bit body included) with a VERP envelope sender; without a VERP address the
client's own MAIL FROM stays the envelope sender; an unverified From is refused with
550 5.7.1 when the account requires a verified domain."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from postroute.delivery.worker import Worker
from postroute.runtime import Runtime
from tests.conftest import Tenant, make_tenant
from tests.domains.conftest import dkim_results, verified_domain
from tests.smtp.conftest import Ports, RawClient, message, queued_id
from tests.support.dns import DnsServer
from tests.support.relay import RecordingRelay

FOLDED = message(
    "From: Shop <shop@example.com>",
    "To: First Customer <customer@example.org>,\r\n  Second <second@example.org>",
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\taus K\u00f6ln",  # folded, raw UTF-8 (RFC 6532)
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: 8bit",
    body="Gr\u00fc\u00dfe  aus\tK\u00f6ln  \r\n\r\n",
)


async def transaction(
    ports: Ports, opened: list[RawClient], mail_from: str, data: bytes
) -> tuple[int, str]:
    raw = await RawClient.connect(ports.starttls)
    opened.append(raw)
    await raw.command("EHLO app.example.com")
    assert (await raw.command(f"MAIL FROM:<{mail_from}>"))[0] == 250
    assert (await raw.command("RCPT TO:<customer@example.org>"))[0] == 250
    assert (await raw.command("DATA"))[0] == 354
    await raw.send(data + b".\r\n")
    return await raw.reply()


@pytest.mark.usefixtures("relay_pool", "loopback_credential")
async def test_a_verified_domains_smtp_message_is_signed(
    ports: Ports,
    raw_clients: list[RawClient],
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    dns: DnsServer,
) -> None:
    await verified_domain(client, tenant, dns)
    code, text = await transaction(ports, raw_clients, "app-bounces@example.com", FOLDED)
    assert code == 250, text
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.mail_from == f"bounces+{queued_id(text)}@bounces.example.com"
    assert b"\r\n  Second <second@example.org>" in received.data  # the folding kept
    assert dkim_results(received.data, dns) == [True]


@pytest.mark.usefixtures("relay_pool", "loopback_credential")
@pytest.mark.parametrize("mail_from", ["bounces+abc@bounce.example.com", ""])
async def test_without_a_verp_address_the_clients_mail_from_stays(
    ports: Ports,
    raw_clients: list[RawClient],
    relay: RecordingRelay,
    worker: Worker,
    mail_from: str,
) -> None:
    """As with `swaks --from bounces+abc@bounce.example.com --h-From shop@example.com`:
    the From domain is not verified (and the account does not require it), so the
    client's bounce address (or the null sender) goes to the relay as given."""
    code, text = await transaction(ports, raw_clients, mail_from, FOLDED)
    assert code == 250, text
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.mail_from == (mail_from or "<>")  # (aiosmtpd's way to show <>)
    assert b"DKIM-Signature" not in received.data


@pytest.mark.usefixtures("relay_pool")
async def test_an_unverified_from_is_550_when_required(
    ports: Ports,
    raw_clients: list[RawClient],
    runtime: Runtime,
    client: httpx.AsyncClient,
    dns: DnsServer,
) -> None:
    strict = await make_tenant(runtime, "strict", require_verified_domain=True)
    reply = await client.post(
        "/v1/ip-credentials", json={"cidr": "127.0.0.0/8"}, headers=strict.headers
    )
    assert reply.status_code == 201
    await client.post("/v1/smtp-pools", json=pool_body(), headers=strict.headers)
    code, text = await transaction(ports, raw_clients, "shop@example.com", FOLDED)
    assert code == 550
    assert text.startswith("5.7.1 the From domain example.com is not verified")


async def test_a_bad_mail_from_is_553(
    ports: Ports, raw_clients: list[RawClient], loopback_credential: Any
) -> None:
    raw = await RawClient.connect(ports.starttls)
    raw_clients.append(raw)
    await raw.command("EHLO app.example.com")
    code, text = await raw.command("MAIL FROM:<not-an-address>")
    assert code == 553 and text.startswith("5.1.7 Invalid sender address")


def pool_body() -> dict[str, Any]:
    return {"name": "strict", "host": "127.0.0.1", "port": 9, "encryption": "none"}
