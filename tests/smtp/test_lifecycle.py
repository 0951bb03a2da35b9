"""How sessions end, on uvloop (as in production): the idle timeout says 421 and closes;
a client that closes before its greeting leaves no socket, file descriptor or session
behind and still counts toward the per-IP connection limit; ``SmtpServer.stop()`` says
421 to every session, whatever it is doing, closes them all and returns; clients'
control characters are escaped in the log.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from postroute.smtp import replies
from postroute.smtp.listeners import SmtpServer
from tests.smtp.conftest import (
    HOST,
    SETTLE_TIMEOUT,
    Ports,
    RawClient,
    close_wait,
    connect_and_close,
    open_fds,
    settle,
    unread_bytes,
)

HOST_NAME = "mx.postroute.test"
EARLY_CLOSES = 1_000
MANY = {"smtp_max_connections_per_ip_per_minute": 1_000_000}


def reply_of(reply: replies.Reply) -> tuple[int, str]:
    """A reply as :meth:`RawClient.reply` reads it."""
    return reply.code, reply(host=HOST_NAME).message.decode()


@pytest.mark.parametrize("smtp_overrides", [{"smtp_idle_timeout_seconds": 0.5}], indirect=True)
async def test_idle_sessions_get_421_and_are_closed(
    smtp_server: SmtpServer, ports: Ports, raw_clients: list[RawClient]
) -> None:
    talked = await RawClient.connect(ports.starttls)
    raw_clients.append(talked)
    assert (await talked.command("EHLO app.example.com"))[0] == 250
    silent = await RawClient.connect(ports.implicit, greeting=False)  # no TLS handshake
    raw_clients.append(silent)
    unread = await RawClient.connect(ports.starttls, greeting=False)  # never reads
    raw_clients.append(unread)

    # Then nothing: the server gives up after the idle timeout.
    assert await talked.reply() == reply_of(replies.S421_TIMEOUT)
    assert await talked.closed()
    assert await silent.closed()
    assert (await unread.reply())[0] == 220
    assert await unread.reply() == reply_of(replies.S421_TIMEOUT)
    assert await unread.closed()
    await settle(lambda: not smtp_server.sessions, "every session gone")


@pytest.mark.parametrize("smtp_overrides", [{"smtp_idle_timeout_seconds": 0.5}], indirect=True)
async def test_a_client_that_never_reads_its_replies_is_dropped(
    smtp_server: SmtpServer, ports: Ports
) -> None:
    """Commands sent without reading a reply, until the server stops reading them (its
    replies fill both sockets' buffers): the idle timeout cannot even send its 421, and
    the connection is dropped instead of waiting forever for its buffer to drain."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (HOST, ports.starttls))
        await settle(lambda: len(smtp_server.sessions) == 1, "a session")
        (session,) = smtp_server.sessions
        ehlo = b"EHLO app.example.com\r\n" * 1000  # each answered with 7 lines
        sent = 0
        while True:  # until the server stops reading: the kernel takes no more
            try:
                sent += sock.send(ehlo)
            except BlockingIOError:
                break
            await asyncio.sleep(0)
        assert sent > len(ehlo)
        await settle(lambda: not smtp_server.sessions, "the session dropped")
        assert session.transport is None


@pytest.mark.parametrize("smtp_overrides", [MANY], indirect=True)
async def test_clients_closing_before_the_greeting_leave_nothing_open(
    smtp_server: SmtpServer, ports: Ports
) -> None:
    before = open_fds()
    for port in (ports.starttls, ports.implicit):
        for _ in range(EARLY_CLOSES // 2):
            await connect_and_close(port)

    await settle(lambda: not smtp_server.sessions, "every session gone")
    await settle(lambda: open_fds() == before, f"back to {before} open files")
    assert close_wait(ports.starttls) == close_wait(ports.implicit) == 0


LIMIT = 5


@pytest.mark.parametrize(
    "smtp_overrides", [{"smtp_max_connections_per_ip_per_minute": LIMIT}], indirect=True
)
async def test_connections_closed_before_the_greeting_count_toward_the_per_ip_limit(
    smtp_server: SmtpServer, ports: Ports, raw_clients: list[RawClient]
) -> None:
    for _ in range(LIMIT):
        await connect_and_close(ports.starttls)
    raw = await RawClient.connect(ports.starttls, greeting=False)
    raw_clients.append(raw)
    assert await raw.reply() == reply_of(replies.S421_TOO_MANY_CONNECTIONS)
    assert await raw.closed()
    await settle(lambda: not smtp_server.sessions, "every session gone")


@pytest.mark.usefixtures("relay_pool", "loopback_credential")
async def test_stop_says_421_to_every_session_and_closes_them_all(
    smtp_server: SmtpServer, ports: Ports, raw_clients: list[RawClient]
) -> None:
    before = open_fds()
    idle = await RawClient.connect(ports.starttls)
    raw_clients.append(idle)
    assert (await idle.command("EHLO app.example.com"))[0] == 250
    unread = await RawClient.connect(ports.starttls, greeting=False)
    raw_clients.append(unread)
    in_data = await RawClient.connect(ports.starttls)
    raw_clients.append(in_data)
    assert (await in_data.command("EHLO app.example.com"))[0] == 250
    assert (await in_data.command("MAIL FROM:<shop@example.com>"))[0] == 250
    assert (await in_data.command("RCPT TO:<customer@example.org>"))[0] == 250
    assert (await in_data.command("DATA"))[0] == 354
    await in_data.send(b"From: shop@example.com\r\nSubject: Half\r\n\r\nThe first line\r\n")
    await settle(lambda: len(smtp_server.sessions) == 3, "three sessions")
    await settle(lambda: unread_bytes(ports.starttls) == 0, "the start read by the server")

    await asyncio.wait_for(smtp_server.stop(), SETTLE_TIMEOUT)  # a bound, not a timing

    assert not smtp_server.sessions
    shutdown = reply_of(replies.S421_SHUTDOWN)
    assert await idle.reply() == shutdown
    assert (await unread.reply())[0] == 220
    assert await unread.reply() == shutdown
    assert await in_data.reply() == shutdown
    for raw in (idle, unread, in_data):
        assert await raw.closed()
        await raw.close()
    listening = 2  # closed by stop() too
    await settle(lambda: open_fds() == before - listening, "every socket closed")
    assert close_wait(ports.starttls) == 0


async def test_client_control_characters_are_escaped_in_the_log(
    ports: Ports, raw_clients: list[RawClient], caplog: pytest.LogCaptureFixture
) -> None:
    raw = await RawClient.connect(ports.starttls)
    raw_clients.append(raw)
    forged = b"\x1b[2K\rERROR:root:forged\x00\x0b"
    assert (await raw.command(forged.decode()))[0] == 500

    (record,) = [r for r in caplog.records if "unrecognised" in r.getMessage()]
    assert record.name == "mail.log"
    text = record.getMessage()
    assert text.isprintable(), text
    assert text.endswith(r"unrecognised: \x1b[2K\rERROR:ROOT:FORGED\x00\x0b")
    assert all(r.getMessage().isprintable() for r in caplog.records if r.levelno >= logging.INFO)
