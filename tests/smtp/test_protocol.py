"""Protocol details: pipelining (also right after the end of DATA), 8BITMIME and SMTPUTF8
content arriving byte for byte, dot-stuffing, a shutdown that answers 421."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import httpx
import pytest

from postroute.config import Settings
from postroute.delivery.worker import Worker
from postroute.smtp import replies
from postroute.smtp.listeners import SmtpServer
from tests.conftest import Tenant
from tests.smtp.conftest import HOST, Ports, RawClient, queued_id
from tests.support.relay import RecordingRelay

pytestmark = pytest.mark.usefixtures("relay_pool", "loopback_credential")


async def test_pipelined_commands(
    ports: Ports,
    raw_clients: list[RawClient],
    relay: RecordingRelay,
    worker: Worker,
) -> None:
    raw = await RawClient.connect(ports.starttls)
    raw_clients.append(raw)
    assert "PIPELINING" in (await raw.command("EHLO app.example.com"))[1].split("\n")
    await raw.send(
        "MAIL FROM:<shop@example.com>\r\n"
        "RCPT TO:<a@example.org>\r\n"
        "RCPT TO:<b@example.org>\r\n"
        "DATA\r\n"
    )
    assert [(await raw.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
    body = b"From: shop@example.com\r\nSubject: Piped\r\n\r\n.. dotted\r\nend\r\n"
    # End of data, then the next transaction and QUIT, in one write.
    await raw.send(
        body + b".\r\nMAIL FROM:<shop@example.com>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
    )
    code, text = await raw.reply()
    assert code == 250 and len(text.split("\n")) == 3
    assert [(await raw.reply())[0] for _ in range(3)] == [250, 250, 354]
    await raw.send(body + b".\r\nQUIT\r\n")
    assert (await raw.reply())[0] == 250
    assert await raw.reply() == (221, replies.S221_BYE.message.decode())

    await worker.drain()
    received = await relay.wait_for_async(3)
    assert sorted(r for m in received for r in m.rcpt_tos) == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
    ]
    assert all(m.data.endswith(b"\r\n\r\n. dotted\r\nend\r\n") for m in received)


EIGHT_BIT = (
    "From: Zoë Shop <shop@example.com>\r\n"
    "To: Jörg <customer@example.org>\r\n"
    "Subject: Grüße — ご注文ありがとうございます\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Ünïcødé body: 日本語のテキスト\r\n"
    ".A line starting with a dot\r\n"
).encode()


@pytest.mark.parametrize("options", [["BODY=8BITMIME"], ["BODY=8BITMIME", "SMTPUTF8"]])
async def test_8bitmime_and_smtputf8_arrive_intact(
    options: list[str],
    ports: Ports,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
) -> None:
    async with aiosmtplib.SMTP(hostname=HOST, port=ports.starttls, start_tls=False) as smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("8bitmime") and smtp.supports_extension("smtputf8")
        await smtp.mail("shop@example.com", options=options)
        await smtp.rcpt("customer@example.org")
        reply = await smtp.data(EIGHT_BIT)
    assert reply.code == 250, reply
    message_id = queued_id(reply.message)
    stored = (await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)).json()
    assert stored["subject"] == "Grüße — ご注文ありがとうございます"
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.data.endswith(EIGHT_BIT.split(b"\r\n", 1)[1])  # all but the added Date
    assert EIGHT_BIT.split(b"\r\n", 1)[0] in received.data


async def test_internationalised_recipient_is_accepted_and_relayed(
    ports: Ports,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
) -> None:
    async with aiosmtplib.SMTP(hostname=HOST, port=ports.starttls, start_tls=False) as smtp:
        await smtp.ehlo()
        await smtp.mail("shop@example.com", options=["SMTPUTF8"], encoding="utf-8")
        await smtp.rcpt("jörg@bücher.example", encoding="utf-8")
        reply = await smtp.data(EIGHT_BIT)
    assert reply.code == 250, reply
    message_id = queued_id(reply.message)
    stored = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
    assert stored.json()["to"] == "jörg@bücher.example"
    assert stored.json()["recipient_type"] == "bcc"  # not in To or Cc

    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.rcpt_tos == ("jörg@bücher.example",)  # UTF-8, not an A-label
    assert received.parsed()["X-Postroute-Message-ID"] == message_id
    assert received.data.endswith(EIGHT_BIT.split(b"\r\n", 1)[1])  # all but the added Date
    assert EIGHT_BIT.split(b"\r\n", 1)[0] in received.data
    detail = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
    assert detail.json()["status"] == "sent"


async def test_stop_says_421_to_open_sessions(
    smtp_server: SmtpServer, ports: Ports, raw_clients: list[RawClient]
) -> None:
    raw = await RawClient.connect(ports.starttls)
    raw_clients.append(raw)
    await raw.command("EHLO app.example.com")
    await smtp_server.stop()
    assert await raw.reply() == (
        421,
        replies.S421_SHUTDOWN(host="mx.postroute.test").message.decode(),
    )
    assert await raw.closed()


@pytest.mark.parametrize("smtp_overrides", [{"tls_cert": None, "tls_key": None}], indirect=True)
async def test_self_signed_certificate_in_the_data_dir(
    ports: Ports, settings: Settings, raw_clients: list[RawClient]
) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed
    reader, writer = await asyncio.open_connection(HOST, ports.implicit, ssl=context)
    raw = RawClient(reader, writer)
    raw_clients.append(raw)
    assert (await raw.reply())[0] == 220
    assert "AUTH PLAIN LOGIN" in (await raw.command("EHLO app.example.com"))[1].split("\n")
    certificate = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    pem = (settings.data_dir / "tls" / "smtp-cert.pem").read_text()
    assert ssl.DER_cert_to_PEM_cert(certificate) == pem
