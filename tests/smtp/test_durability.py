"""A 250 means stored: stop the listeners before any worker ran, start a new process
(runtime) on the same database, and the message is delivered."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from typing import Any

from postroute.config import Settings
from postroute.runtime import Runtime
from postroute.smtp.listeners import IMPLICIT, SmtpServer
from tests.conftest import Tenant
from tests.smtp.conftest import BASIC, HOST, deliver_after_restart, queued_id
from tests.support.relay import RecordingRelay


def send(port: int, tls: ssl.SSLContext, key: str) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL(HOST, port, context=tls, timeout=5) as smtp:
        smtp.login("app", key)
        smtp.mail("shop@example.com")
        smtp.rcpt("customer@example.org")
        return smtp.data(BASIC)


async def test_accepted_mail_survives_a_restart(
    settings: Settings,
    runtime: Runtime,
    client_tls: ssl.SSLContext,
    tenant: Tenant,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
) -> None:
    server = SmtpServer(runtime)
    await server.start()
    try:
        code, text = await asyncio.to_thread(send, server.ports[IMPLICIT], client_tls, tenant.key)
    finally:
        await server.stop()
    assert code == 250, text
    message_id = queued_id(text)
    await runtime.close()  # the first process is gone; nothing was relayed
    assert relay.messages == []

    await deliver_after_restart(settings, relay, tenant, message_id, "after-restart")
