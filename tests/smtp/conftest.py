"""SMTP ingress fixtures: both listeners on ephemeral loopback ports in the test's event
loop, a certificate from the test CA, a pool on a recording relay, a worker.

Every test here runs on uvloop, as production does. Blocking clients (smtplib) run in a
thread (``asyncio.to_thread``), never on the loop that serves the listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop

from postroute.api.app import create_app
from postroute.config import Settings
from postroute.delivery.worker import Worker
from postroute.runtime import Runtime
from postroute.smtp.listeners import IMPLICIT, STARTTLS, SmtpServer
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.support.fixtures import RelayCA
from tests.support.relay import ReceivedMessage, RecordingRelay

HOST = "127.0.0.1"
QUEUED = re.compile(r"Message queued as (\S+)")
CLOSE_WAIT = "08"  # the state column of /proc/net/tcp
SETTLE_TIMEOUT = 30.0  # seconds: generous, a bound for a poll, not a timed assertion


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test here runs on uvloop, the event loop production installs
    (``uvloop.install()`` in ``postroute.cli.run``)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def smtp_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings a test replaces (limits, timeouts): override this fixture, or use
    ``@pytest.mark.parametrize("smtp_overrides", [{...}], indirect=True)``."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, relay_ca: RelayCA, smtp_overrides: dict[str, Any]
) -> Settings:
    """The suite's settings with both listeners on port 0 and a certificate from the CA."""
    pem = tmp_path / "smtp-cert.pem"
    relay_ca.ca.issue_cert("localhost", HOST).private_key_and_cert_chain_pem.write_to_path(str(pem))
    values: dict[str, Any] = {
        "smtp_bind": f"{HOST}:0",
        "smtps_bind": f"{HOST}:0",
        "tls_cert": pem,
        "tls_key": pem,
        "smtp_hostname": "mx.postroute.test",
    }
    values.update(smtp_overrides)
    return settings.model_copy(update=values)


@dataclass(frozen=True)
class Ports:
    starttls: int
    implicit: int


@pytest.fixture
async def smtp_server(runtime: Runtime) -> AsyncIterator[SmtpServer]:
    server = SmtpServer(runtime)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def ports(smtp_server: SmtpServer) -> Ports:
    return Ports(smtp_server.ports[STARTTLS], smtp_server.ports[IMPLICIT])


@pytest.fixture
def client_tls(relay_ca: RelayCA) -> ssl.SSLContext:
    """A client context that trusts the listeners' certificate."""
    context = ssl.create_default_context()
    relay_ca.ca.configure_trust(context)
    return context


@pytest.fixture
async def relay_pool(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay
) -> dict[str, Any]:
    """The tenant's default pool, relaying to the recording relay."""
    return await add_pool(client, tenant, relay.port, name="main")


@pytest.fixture
async def worker(runtime: Runtime) -> AsyncIterator[Worker]:
    w = Worker(runtime, owner="smtp-test-worker")
    yield w
    await w.close()


@pytest.fixture
async def loopback_credential(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    """127.0.0.0/8 may send without AUTH for the tenant."""
    reply = await client.post(
        "/v1/ip-credentials", json={"cidr": "127.0.0.0/8"}, headers=tenant.headers
    )
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def deliver_after_restart(
    settings: Settings, relay: RecordingRelay, tenant: Tenant, message_id: str, owner: str
) -> ReceivedMessage:
    """A fresh runtime (a new process, real clock) and its worker deliver ``message_id``
    to ``relay``; its API then says ``sent``."""
    restarted = Runtime.build(settings)
    worker = Worker(restarted, owner=owner)
    try:
        await worker.drain()
        (received,) = await relay.wait_for_async(1)
        assert received.parsed()["X-Postroute-Message-ID"] == message_id
        transport = httpx.ASGITransport(app=create_app(restarted))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
            reply = await api.get(f"/v1/messages/{message_id}", headers=tenant.headers)
        assert reply.json()["status"] == "sent"
        return received
    finally:
        await worker.close()
        await restarted.close()


def queued_id(text: bytes | str) -> str:
    """The first message id of a 250 reply."""
    match = QUEUED.search(text.decode() if isinstance(text, bytes) else text)
    assert match is not None, text
    return match.group(1)


def message(*headers: str, body: str = "Hello.\r\n") -> bytes:
    """A message from header lines (CRLF added) and a body."""
    return ("".join(h + "\r\n" for h in headers) + "\r\n" + body).encode()


BASIC = message(
    "From: Shop <shop@example.com>",
    "To: customer@example.org",
    "Subject: Your order",
)


class RawClient:
    """A plain-text SMTP client on asyncio streams, for exact protocol tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, *, greeting: bool = True) -> RawClient:
        reader, writer = await asyncio.open_connection(HOST, port)
        raw = cls(reader, writer)
        if greeting:
            code, _ = await raw.reply()
            assert code == 220
        return raw

    async def reply(self) -> tuple[int, str]:
        """One reply (all its lines), as (code, text with lines joined by newlines)."""
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 5)).decode()
            assert line.endswith("\r\n"), f"connection closed, got {line!r}"
            lines.append(line[4:-2])
            if line[3] == " ":
                return int(line[:3]), "\n".join(lines)

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def command(self, line: str) -> tuple[int, str]:
        await self.send(line + "\r\n")
        return await self.reply()

    async def closed(self) -> bool:
        """True when the server closed the connection."""
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def submit(ports: Ports, opened: list[RawClient], data: bytes) -> tuple[int, str]:
    """One SMTP transaction on a new connection: the DATA reply."""
    raw = await RawClient.connect(ports.starttls)
    opened.append(raw)
    await raw.command("EHLO app.example.com")
    assert (await raw.command("MAIL FROM:<shop@example.com>"))[0] == 250
    assert (await raw.command("RCPT TO:<customer@example.org>"))[0] == 250
    assert (await raw.command("DATA"))[0] == 354
    await raw.send(data + b".\r\n")
    return await raw.reply()


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[RawClient]]:
    """Every RawClient appended here is closed at teardown."""
    opened: list[RawClient] = []
    yield opened
    for raw in opened:
        await raw.close()


def open_fds() -> int:
    """File descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def _sockets(port: int) -> list[list[str]]:
    """The rows of /proc/net/tcp (IPv4) whose local port is ``port``: server-side sockets."""
    with open("/proc/net/tcp") as table:
        next(table)
        rows = [line.split() for line in table]
    return [f for f in rows if int(f[1].rsplit(":", 1)[1], 16) == port]


def close_wait(port: int) -> int:
    """Server-side connections of ``port`` in CLOSE-WAIT: their client has gone but the
    server has not closed them."""
    return sum(1 for f in _sockets(port) if f[3] == CLOSE_WAIT)


def unread_bytes(port: int) -> int:
    """Bytes that server-side sockets of ``port`` have received and the server has not
    read yet. A socket closed with some is reset (RST), and its peer may then lose the
    replies it had not read."""
    return sum(int(f[4].split(":")[1], 16) for f in _sockets(port))


async def settle(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds (a poll bounded by :data:`SETTLE_TIMEOUT`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while not condition():
        assert loop.time() < deadline, f"still not {what} after {SETTLE_TIMEOUT} s"
        await asyncio.sleep(0.01)


async def connect_and_close(port: int) -> None:
    """Connect and close at once (a FIN), without reading the greeting."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, port))
