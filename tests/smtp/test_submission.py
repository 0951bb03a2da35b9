"""Submission with smtplib (STARTTLS + AUTH LOGIN, implicit TLS + AUTH PLAIN) through to
the recording relay: header controls (on both listeners; a pool chosen by name or by
id), List-Unsubscribe, untouched headers and body."""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from postroute.delivery.worker import Worker
from postroute.models import Message
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.smtp.conftest import BASIC, HOST, Ports, queued_id
from tests.support.fixtures import RelayFactory
from tests.support.relay import RecordingRelay

# Headers that must arrive byte for byte: odd spacing, folding, encoded words, raw UTF-8.
KEPT = [
    b"From: =?utf-8?q?Zo=C3=AB?= <shop@example.com>\r\n",
    b"To: Customer <customer@example.org>\r\n",
    b"Subject: Your order  #42\r\n",
    b"Date: Tue, 01 Dec 2026 10:00:00 +0100\r\n",
    b"X-Custom:   spaced\t value \r\n",
    b"X-Folded: first part\r\n\tsecond part\r\n",
    b"MIME-Version: 1.0\r\n",
    b"Content-Type: text/plain; charset=utf-8\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
]
CONTROLS = [
    b"X-Postroute-Tags: welcome, onboarding\r\n",
    b"X-Postroute-Pool: main\r\n",
    b"X-Postroute-Metadata-user-id: 42\r\n",
    b"X-Postroute-Metadata-Plan: =?utf-8?q?pr=C3=A9mium?=\r\n",
    b"X-Postroute-Track-Opens: true\r\n",
    b"X-Postroute-Track-Clicks: false\r\n",
]
UNSUBSCRIBE = b"<https://example.com/unsubscribe?u=42&t=abc>, <mailto:unsub@example.com>"
BODY = b"\r\nHello =C3=A9,\r\n..a line that starts with a dot\r\n\r\nBye.\r\n"


def rich_message() -> bytes:
    return (
        KEPT[0]
        + CONTROLS[0]
        + b"".join(KEPT[1:4])
        + b"".join(CONTROLS[1:])
        + b"X-List-Unsubscribe: "
        + UNSUBSCRIBE
        + b"\r\n"
        + b"Message-ID: <client-chosen@example.com>\r\n"
        + b"".join(KEPT[4:])
        + BODY
    )


def starttls_login(port: int, tls: ssl.SSLContext, key: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.ehlo("app.example.com")
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        smtp.starttls(context=tls)
        smtp.ehlo("app.example.com")
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        smtp.user, smtp.password = "anything", key
        code, _ = smtp.auth("LOGIN", smtp.auth_login)
        assert code == 235
        smtp.mail("shop@example.com")
        smtp.rcpt("customer@example.org")
        return smtp.data(raw)


def implicit_plain(port: int, tls: ssl.SSLContext, key: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL(HOST, port, context=tls, timeout=5) as smtp:
        smtp.ehlo("app.example.com")
        assert not smtp.has_extn("starttls")
        smtp.user, smtp.password = "any-user-name", key
        code, _ = smtp.auth("PLAIN", smtp.auth_plain)
        assert code == 235
        smtp.mail("shop@example.com")
        smtp.rcpt("customer@example.org")
        return smtp.data(raw)


async def detail(client: httpx.AsyncClient, tenant: Tenant, message_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


Submit = Callable[[int, ssl.SSLContext, str, bytes], tuple[int, bytes]]
# How the message is submitted, and on which listener (a ``Ports`` field).
TRANSPORTS: dict[str, tuple[Submit, str]] = {
    "starttls + AUTH LOGIN": (starttls_login, "starttls"),
    "implicit TLS + AUTH PLAIN": (implicit_plain, "implicit"),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_header_controls_are_applied_and_removed(
    transport: str,
    ports: Ports,
    client_tls: ssl.SSLContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    worker: Worker,
    runtime: Runtime,
) -> None:
    send, listener = TRANSPORTS[transport]
    port = getattr(ports, listener)
    code, text = await asyncio.to_thread(send, port, client_tls, tenant.key, rich_message())
    assert code == 250, text
    assert text.startswith(b"2.0.0 Message queued as msg_")
    message_id = queued_id(text)

    stored = await detail(client, tenant, message_id)  # the id in the 250 opens the message
    assert stored["source"] == "smtp"
    assert stored["status"] == "queued"
    assert stored["from"] == "shop@example.com"
    assert stored["to"] == "customer@example.org"
    assert stored["recipient_type"] == "to"
    assert stored["subject"] == "Your order  #42"
    assert sorted(stored["tags"]) == ["onboarding", "welcome"]
    assert stored["metadata"] == {"user-id": "42", "Plan": "prémium"}
    assert stored["pool_id"] == relay_pool["id"] and stored["requested_pool"] == "main"
    async with runtime.sessions() as session:
        row = await session.get(Message, message_id)
        assert row is not None and (row.track_opens, row.track_clicks) == (True, False)

    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    data = received.data
    for header in KEPT:
        assert header in data, header
    assert data.endswith(BODY)
    assert b"X-Postroute-Tags" not in data and b"X-Postroute-Metadata" not in data
    assert b"X-Postroute-Pool:" not in data and b"X-Postroute-Track" not in data
    assert b"\r\nList-Unsubscribe: " + UNSUBSCRIBE + b"\r\n" in data
    assert b"X-List-Unsubscribe" not in data
    assert re.findall(rb"(?im)^message-id:", data) == [b"Message-ID:"]
    assert b"client-chosen" not in data
    parsed = received.parsed()
    assert parsed["Message-ID"] == stored["message_id"]
    assert parsed["X-Postroute-Message-ID"] == message_id
    assert (await detail(client, tenant, message_id))["status"] == "sent"


async def test_implicit_tls_auth_plain_reaches_relay(
    ports: Ports,
    client_tls: ssl.SSLContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    worker: Worker,
) -> None:
    raw = (
        b"From: shop@example.com\r\nTo: customer@example.org\r\nSubject: Hi\r\n"
        b"X-List-Unsubscribe: <mailto:u@example.com>\r\n\r\nBody\r\n"
    )
    code, text = await asyncio.to_thread(
        implicit_plain, ports.implicit, client_tls, tenant.key, raw
    )
    assert code == 250, text
    message_id = queued_id(text)
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.rcpt_tos == ("customer@example.org",)
    assert received.parsed()["X-Postroute-Message-ID"] == message_id
    assert b"\r\nList-Unsubscribe: <mailto:u@example.com>\r\n" in received.data
    assert received.data.endswith(b"\r\n\r\nBody\r\n")
    assert b"\r\nDate: " in received.data  # added: the client sent none


def several_recipients(port: int, tls: ssl.SSLContext, key: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL(HOST, port, context=tls, timeout=5) as smtp:
        smtp.login("user", key)
        smtp.mail("shop@example.com")
        for rcpt in ("a@example.org", "c@example.org", "hidden@example.net", "A@example.org"):
            assert smtp.rcpt(rcpt)[0] == 250
        return smtp.data(raw)


async def test_several_rcpts_one_message_each_and_bcc_by_envelope(
    ports: Ports,
    client_tls: ssl.SSLContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    worker: Worker,
) -> None:
    raw = (
        b"From: shop@example.com\r\nTo: a@example.org\r\nCc: C <c@example.org>\r\n"
        b"Bcc: hidden@example.net\r\nSubject: Team\r\n\r\nHi all\r\n"
    )
    code, text = await asyncio.to_thread(
        several_recipients, ports.implicit, client_tls, tenant.key, raw
    )
    assert code == 250, text
    lines = text.decode().split("\n")
    assert len(lines) == 4  # one per distinct recipient, then the batch
    ids = [queued_id(line) for line in lines[:3]]
    assert [line.rsplit(" for ", 1)[1] for line in lines[:3]] == [
        "<a@example.org>",
        "<c@example.org>",
        "<hidden@example.net>",
    ]
    assert lines[3].startswith("2.0.0 Batch batch_") and lines[3].endswith("of 3 messages queued")
    kinds = [(await detail(client, tenant, i))["recipient_type"] for i in ids]
    assert kinds == ["to", "cc", "bcc"]
    batch = {(await detail(client, tenant, i))["batch_id"] for i in ids}
    assert batch == {lines[3].split()[2]}

    await worker.drain()
    received = await relay.wait_for_async(3)
    assert sorted(r for m in received for r in m.rcpt_tos) == [
        "a@example.org",
        "c@example.org",
        "hidden@example.net",
    ]
    for m in received:
        assert b"hidden@example.net" not in m.data  # the Bcc header is never relayed
        assert len(re.findall(rb"(?im)^message-id:", m.data)) == 1


async def test_pool_header_by_id_selects_that_pool(
    ports: Ports,
    client_tls: ssl.SSLContext,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    relay_factory: RelayFactory,
    worker: Worker,
) -> None:
    other_relay = relay_factory()
    other = await add_pool(client, tenant, other_relay.port, name="transactional")
    assert relay_pool["is_default"] and not other["is_default"]
    raw = (
        b"From: shop@example.com\r\nTo: customer@example.org\r\nSubject: Receipt\r\n"
        b"X-Postroute-Pool: " + other["id"].encode() + b"\r\n\r\nThanks.\r\n"
    )
    code, text = await asyncio.to_thread(
        implicit_plain, ports.implicit, client_tls, tenant.key, raw
    )
    assert code == 250, text
    message_id = queued_id(text)
    stored = await detail(client, tenant, message_id)
    assert stored["pool_id"] == other["id"]
    assert stored["requested_pool"] == other["id"]

    await worker.drain()
    (received,) = await other_relay.wait_for_async(1)
    assert received.parsed()["X-Postroute-Message-ID"] == message_id
    assert b"X-Postroute-Pool:" not in received.data
    assert received.data.endswith(b"\r\n\r\nThanks.\r\n")
    assert relay.messages == []  # not the default pool's relay


def sendmail(port: int, tls: ssl.SSLContext, key: str, to: list[str]) -> dict[str, Any]:
    """smtplib's ``sendmail`` (as Django's and most clients' send): the recipients it
    reports refused. It never sends a recipient refused with a 452 again."""
    with smtplib.SMTP_SSL(HOST, port, context=tls, timeout=10) as smtp:
        smtp.login("user", key)
        return smtp.sendmail("shop@example.com", to, BASIC)


async def test_sixty_recipients_in_one_sendmail_are_all_stored(
    ports: Ports,
    client_tls: ssl.SSLContext,
    tenant: Tenant,
    runtime: Runtime,
    relay_pool: dict[str, Any],
) -> None:
    """A recipient refused with 452 is lost with these clients: the default limit per
    transaction is Postfix's (1,000), far above what an application sends at once."""
    to = [f"customer{i}@example.org" for i in range(60)]
    refused = await asyncio.to_thread(sendmail, ports.implicit, client_tls, tenant.key, to)
    assert refused == {}
    async with runtime.sessions() as session:
        stored = await session.scalars(select(Message.to_email).where(Message.to_email.in_(to)))
        assert sorted(stored) == sorted(to)
