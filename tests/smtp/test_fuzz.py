"""A fuzz smoke test of the listeners, on uvloop: thousands of malformed sessions (random
bytes, overlong lines, NUL, bare LF, early close, pipelined garbage, half a DATA then
close, STARTTLS then garbage, garbage instead of a TLS handshake) leave no traceback in
the log, no forged log line, no socket in CLOSE-WAIT, no file descriptor and no session
behind; and a well-behaved client is served afterwards.

Seeded: session ``i`` draws everything from ``random.Random(f"{SEED}-{i}")``, so a
failing session is reproduced by its number whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from postroute.runtime import Runtime
from postroute.smtp.listeners import SmtpServer
from tests.smtp.conftest import (
    BASIC,
    HOST,
    Ports,
    RawClient,
    close_wait,
    open_fds,
    settle,
    submit,
)

SEED = 20261204
SESSIONS = 5_000
CONCURRENCY = 16
READ_TIMEOUT = 10.0  # seconds: a bound that turns a hung session into a failure
CLIENT_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)

pytestmark = [
    pytest.mark.usefixtures("relay_pool", "loopback_credential"),
    pytest.mark.parametrize(
        "smtp_overrides", [{"smtp_max_connections_per_ip_per_minute": 10**9}], indirect=True
    ),
]


@dataclass
class Fuzz:
    ports: Ports
    tls: ssl.SSLContext
    cases: dict[str, int] = field(default_factory=dict)
    stalled: list[str] = field(default_factory=list)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connection(
    fuzz: Fuzz, rng: random.Random, *, implicit: bool = False, tls: bool = False
) -> AsyncIterator[Stream]:
    """A connection to a listener, closed at the end: at once (RST) or after what was
    written (FIN), at random."""
    port = fuzz.ports.implicit if implicit else fuzz.ports.starttls
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=fuzz.tls if tls else None, server_hostname="localhost" if tls else None
    )
    try:
        yield reader, writer
    finally:
        if rng.random() < 0.3:
            writer.transport.abort()
        else:
            writer.close()
        with contextlib.suppress(*CLIENT_ERRORS):
            await writer.wait_closed()


async def reply(reader: asyncio.StreamReader) -> bytes:
    """The last line of the next reply; b"" once the server has closed."""
    while True:
        line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        if len(line) < 4 or line[3:4] != b"-":
            return line


async def write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def junk(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(rng.randint(1, size))


def garbage_line(rng: random.Random) -> bytes:
    """A command line no client should send (never a MAIL the server would accept)."""
    return rng.choice(
        [
            b"NOOP",
            b"RSET",
            b"HELP",
            b"VRFY someone",
            b"EXPN list",
            b"RCPT TO:<a@example.org>",
            b"DATA",
            b"AUTH PLAIN AGFwaWtleQBwcl9saXZlX3dyb25n",
            b"AUTH LOGIN",
            b"AUTH",
            b"STARTTLS now",
            b"MAIL FROM:<<>",
            b"MAIL TO:<a@example.org>",
            b"BDAT 10 LAST",
            b"EHLO",
            b"HELO " + b"x" * rng.randint(0, 3000),
            b"\x1b[2J\x1b[H" + junk(rng, 40),
            b"\x00" * rng.randint(1, 20),
            b"EHLO \xff\xfe\xc3\x28",
            b"MAIL FROM:<a@\x00example.com>",
            junk(rng, 200).replace(b"\n", b""),
        ]
    )


async def random_bytes(fuzz: Fuzz, rng: random.Random) -> None:
    implicit = rng.random() < 0.2  # in place of a TLS handshake
    async with connection(fuzz, rng, implicit=implicit) as (reader, writer):
        if not implicit and rng.random() < 0.5:
            await reply(reader)
        await write(writer, junk(rng, 4000))


async def overlong_line(fuzz: Fuzz, rng: random.Random) -> None:
    async with connection(fuzz, rng) as (reader, writer):
        await reply(reader)
        line = b"EHLO " + b"a" * rng.choice([1100, 70_000, 200_000])
        await write(writer, line + rng.choice([b"\r\n", b"\n", b""]))
        if rng.random() < 0.5:
            await write(writer, b"NOOP\r\n")
            await reply(reader)


async def nul_bytes(fuzz: Fuzz, rng: random.Random) -> None:
    async with connection(fuzz, rng) as (_, writer):
        await write(writer, b"EHLO \x00client\x00\r\n\x00\x00\x00\r\nNO\x00OP\r\n" + b"\x00" * 64)


async def bare_lf(fuzz: Fuzz, rng: random.Random) -> None:
    async with connection(fuzz, rng) as (reader, writer):
        await write(writer, b"EHLO app.example.com\nNOOP\nRSET\nHELP\nDATA\n")
        for _ in range(rng.randint(0, 3)):
            await reply(reader)


async def early_close(fuzz: Fuzz, rng: random.Random) -> None:
    implicit = rng.random() < 0.2  # before the TLS handshake
    async with connection(fuzz, rng, implicit=implicit) as (reader, _):
        if not implicit and rng.random() < 0.3:
            await reply(reader)


async def pipelined_garbage(fuzz: Fuzz, rng: random.Random) -> None:
    async with connection(fuzz, rng) as (reader, writer):
        lines = [b"EHLO app.example.com"] + [garbage_line(rng) for _ in range(rng.randint(1, 30))]
        if rng.random() < 0.2:
            lines.append(b"QUIT")
        await write(writer, b"".join(line + rng.choice([b"\r\n", b"\n"]) for line in lines))
        for _ in range(rng.randint(0, 3)):
            await reply(reader)


async def half_data(fuzz: Fuzz, rng: random.Random) -> None:
    async with connection(fuzz, rng) as (reader, writer):
        await reply(reader)
        await write(writer, b"EHLO app.example.com\r\nMAIL FROM:<shop@example.com>\r\n")
        await reply(reader)
        if not (await reply(reader)).startswith(b"250"):
            return
        await write(writer, b"RCPT TO:<customer@example.org>\r\nDATA\r\n")
        await reply(reader)
        if not (await reply(reader)).startswith(b"354"):
            return
        message = BASIC + junk(rng, 3000) + rng.choice([b"", b"\r\n.", b"\n.\n", b"\r\n\x00"])
        await write(writer, message[: rng.randint(1, len(message))])


async def starttls_then_garbage(fuzz: Fuzz, rng: random.Random) -> None:
    async with connection(fuzz, rng) as (reader, writer):
        await write(writer, b"EHLO app.example.com\r\nSTARTTLS\r\n")
        await reply(reader)
        await reply(reader)
        if rng.random() < 0.5:
            await reply(reader)  # the 220 before the garbage, else pipelined with it
        # a TLS record header (handshake, TLS 1.0), then anything
        await write(writer, rng.choice([b"", b"\x16\x03\x01\x02\x00"]) + junk(rng, 600))


async def tls_then_garbage(fuzz: Fuzz, rng: random.Random) -> None:
    async with connection(fuzz, rng, implicit=True, tls=True) as (reader, writer):
        await reply(reader)
        await write(writer, b"".join(garbage_line(rng) + b"\r\n" for _ in range(5)))
        await reply(reader)


Case = Callable[[Fuzz, random.Random], Awaitable[None]]
CASES: dict[Case, int] = {  # case: weight
    random_bytes: 14,
    overlong_line: 6,
    nul_bytes: 10,
    bare_lf: 10,
    early_close: 20,
    pipelined_garbage: 16,
    half_data: 10,
    starttls_then_garbage: 10,
    tls_then_garbage: 4,
}


async def fill_pool(engine: AsyncEngine) -> None:
    """Open every connection the database pool keeps: the sessions' concurrent lookups
    (IP credential, API key) then open only connections that are closed again once
    returned, and the count of open files can come back to where it started."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(engine.sync_engine.pool.size()):
            await stack.enter_async_context(engine.connect())


async def run_session(fuzz: Fuzz, number: int) -> None:
    rng = random.Random(f"{SEED}-{number}")
    case = rng.choices(list(CASES), weights=list(CASES.values()))[0]
    fuzz.cases[case.__name__] = fuzz.cases.get(case.__name__, 0) + 1
    try:
        await case(fuzz, rng)
    except TimeoutError:
        fuzz.stalled.append(f"session {number} ({case.__name__})")
    except CLIENT_ERRORS:
        pass  # the server closed first, or refused the TLS handshake: fine


async def test_malformed_sessions_leave_nothing_behind(
    smtp_server: SmtpServer,
    ports: Ports,
    client_tls: ssl.SSLContext,
    raw_clients: list[RawClient],
    caplog: pytest.LogCaptureFixture,
    runtime: Runtime,
) -> None:
    caplog.set_level(logging.INFO)
    assert (await submit(ports, raw_clients, BASIC))[0] == 250  # opens what a message needs
    await raw_clients.pop().close()
    await fill_pool(runtime.engine)
    await settle(lambda: not smtp_server.sessions, "every session gone")
    before = open_fds()

    fuzz = Fuzz(ports, client_tls)
    numbers = iter(range(SESSIONS))

    async def client() -> None:
        for number in numbers:
            await run_session(fuzz, number)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))

    assert fuzz.stalled == []
    assert len(fuzz.cases) == len(CASES), fuzz.cases
    await settle(lambda: not smtp_server.sessions, "every session gone")
    await settle(
        lambda: close_wait(ports.starttls) == close_wait(ports.implicit) == 0, "no CLOSE-WAIT"
    )
    await settle(lambda: open_fds() == before, f"back to {before} open files")
    tracebacks = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert tracebacks == []
    assert "Traceback" not in caplog.text
    forged = [r.getMessage() for r in caplog.records if not r.getMessage().isprintable()]
    assert forged == []

    code, text = await submit(ports, raw_clients, BASIC)
    assert code == 250, text
