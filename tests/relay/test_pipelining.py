"""RFC 2920 pipelining towards relays that offer it, on both event loops the worker uses.

Each scenario runs under plain asyncio and under uvloop (which `serve` and `worker` use):
uvloop's transports keep a protocol's bound methods, which the pipelining protocol must
survive. The relays are real aiosmtpd relays on loopback, or a raw scripted one where a
reply aiosmtpd never gives is needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from postroute.relay import transport
from postroute.relay.config import ClientOptions, RelayConfig
from postroute.relay.errors import (
    SMTP_CONNECTION_ERROR,
    SMTP_RATE_LIMIT,
    SMTP_REJECTED,
    SMTP_TIMEOUT,
)
from postroute.relay.pipelining import content_for_data
from postroute.relay.results import (
    Bounced,
    Deferred,
    Outcome,
    RelayDown,
    Sent,
    UnknownOutcome,
)
from postroute.relay.session import RelaySession, open_session
from tests.support.fixtures import RelayFactory
from tests.support.relay import RecordingRelay

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]

# A leading dot on a line must reach the relay as it was (dot-stuffed on the wire).
MESSAGE = (
    b"From: shop@example.com\r\nTo: user@example.org\r\nSubject: Hi\r\n\r\n"
    b"first line\r\n.a line with a leading dot\r\n..two dots\r\nlast line\r\n"
)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[return-value]


async def session(port: int) -> RelaySession:
    return await open_session(RelayConfig("127.0.0.1", port, "none"), ClientOptions(timeout=5))


async def send_several(port: int, count: int) -> list[Outcome | transport.Stale]:
    smtp = await session(port)
    try:
        return [
            await transport.send_message(
                smtp, "shop@example.com", f"user{i}@example.org", MESSAGE, reset=i > 0
            )
            for i in range(count)
        ]
    finally:
        await transport.close(smtp)


def test_a_reused_session_sends_each_message_as_one_group(
    run: Run[Any], relay: RecordingRelay
) -> None:
    outcomes = run(send_several(relay.port, 5))
    assert all(isinstance(o, Sent) and o.code == 250 for o in outcomes)
    received = relay.wait_for(5)
    assert [m.rcpt_tos for m in received] == [(f"user{i}@example.org",) for i in range(5)]
    assert all(m.data == MESSAGE for m in received)
    assert relay.connections == 1
    assert relay.rset_count == 4  # RSET before each reuse, inside the group
    assert relay.pipelined_count == 5  # RCPT (and DATA) written with every MAIL


def test_a_relay_without_pipelining_gets_one_command_at_a_time(
    run: Run[Any], relay_factory: RelayFactory
) -> None:
    relay = relay_factory(pipelining=False)
    outcomes = run(send_several(relay.port, 3))
    assert all(isinstance(o, Sent) for o in outcomes)
    assert all(m.data == MESSAGE for m in relay.wait_for(3))
    assert relay.rset_count == 2
    assert relay.pipelined_count == 0


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ({"mail": ["553 5.1.8 sender refused"]}, Bounced(553, "5.1.8 sender refused")),
        ({"rcpt": ["550 5.1.1 no such user"]}, Bounced(550, "5.1.1 no such user")),
        ({"rcpt": ["451 4.2.0 try later"]}, Deferred(451, "4.2.0 try later")),
        ({"data": ["554 5.7.1 looks like spam"]}, Bounced(554, "5.7.1 looks like spam")),
        (
            {"rcpt": ["454 4.7.0 Throttling failure: rate exceeded"]},
            RelayDown(SMTP_RATE_LIMIT, "4.7.0 Throttling failure: rate exceeded", 454),
        ),
        (
            {"rcpt": ["421 4.3.0 closing"]},
            RelayDown(SMTP_REJECTED, "4.3.0 closing", 421),
        ),
    ],
)
def test_the_first_failing_reply_of_a_group_decides(
    run: Run[Any],
    relay_factory: RelayFactory,
    script: dict[str, list[str]],
    expected: Outcome,
) -> None:
    relay = relay_factory()

    async def scenario() -> tuple[Outcome | transport.Stale, Outcome | transport.Stale]:
        smtp = await session(relay.port)
        try:
            await transport.send_message(smtp, "shop@example.com", "a@example.org", MESSAGE)
            relay.script(**script)  # type: ignore[arg-type]
            failed = await transport.send_message(
                smtp, "shop@example.com", "b@example.org", MESSAGE, reset=True
            )
            if not transport.session_usable(failed) or not smtp.is_connected:
                return failed, transport.STALE
            after = await transport.send_message(
                smtp, "shop@example.com", "c@example.org", MESSAGE, reset=True
            )
            return failed, after
        finally:
            await transport.close(smtp)

    failed, after = run(scenario())
    assert failed == expected
    if isinstance(expected, RelayDown):
        return  # the caller drops the session
    assert isinstance(after, Sent)  # the same session carries on after a refusal
    assert [m.rcpt_tos for m in relay.wait_for(2)] == [("a@example.org",), ("c@example.org",)]
    assert relay.connections == 1


@pytest.mark.parametrize("noticed", [True, False], ids=["noticed", "unnoticed"])
def test_a_session_the_relay_closed_is_stale_and_nothing_is_sent(
    run: Run[Any], relay: RecordingRelay, noticed: bool
) -> None:
    """Closed while idle: found before writing (the loop saw the close) or by the group
    getting no reply at all. Either way the caller opens a new session and sends again."""

    async def scenario() -> Outcome | transport.Stale:
        smtp = await session(relay.port)
        try:
            await transport.send_message(smtp, "shop@example.com", "a@example.org", MESSAGE)
            relay.drop_sessions()
            if noticed:
                for _ in range(500):
                    if not smtp.is_connected:
                        break
                    await asyncio.sleep(0.01)
                assert not smtp.is_connected
            return await transport.send_message(
                smtp, "shop@example.com", "b@example.org", MESSAGE, reset=True
            )
        finally:
            await transport.close(smtp)

    assert run(scenario()) is transport.STALE
    assert [m.rcpt_tos for m in relay.messages] == [("a@example.org",)]


def test_content_is_not_sent_when_a_relay_says_354_after_refusing_the_recipient(
    run: Run[Any],
) -> None:
    """RFC 2920 asks a relay to refuse DATA when no recipient was accepted; one that says
    354 anyway must not get the content (nor a lone "."): the session is dropped."""
    seen: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 lenient.test ESMTP\r\n")
        replies = {b"EHLO": b"250-lenient.test\r\n250 PIPELINING\r\n", b"MAIL": b"250 ok\r\n"}
        replies |= {b"RCPT": b"550 5.1.1 no such user\r\n", b"DATA": b"354 go ahead\r\n"}
        while line := await reader.readline():
            seen.append(line)
            writer.write(replies.get(line[:4].upper(), b"250 ok\r\n"))
        writer.close()

    async def scenario() -> tuple[Outcome | transport.Stale, bool]:
        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            smtp = await session(port)
            try:
                outcome = await transport.send_message(
                    smtp, "shop@example.com", "nobody@example.org", MESSAGE
                )
                return outcome, smtp.is_connected
            finally:
                await transport.close(smtp)

    outcome, connected = run(scenario())
    assert outcome == Bounced(550, "5.1.1 no such user")
    assert not connected
    commands = [line.split(b":")[0].split()[0].upper() for line in seen]
    assert commands[-3:] == [b"MAIL", b"RCPT", b"DATA"]  # nothing after DATA


async def ask(port: int, timeout: float = 5) -> Outcome | transport.Stale:
    """One message through a new session to the relay on ``port``."""
    smtp = await open_session(RelayConfig("127.0.0.1", port, "none"), ClientOptions(timeout))
    try:
        return await transport.send_message(smtp, "shop@example.com", "a@example.org", MESSAGE)
    finally:
        await transport.close(smtp)


def ehlo_reply(pipelining: bool) -> bytes:
    return b"250-flaky.test\r\n250 PIPELINING\r\n" if pipelining else b"250 flaky.test\r\n"


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_session_lost_after_the_group_is_relay_trouble(run: Run[Any], pipelining: bool) -> None:
    """MAIL and RCPT accepted, then the connection drops before DATA's reply: RelayDown
    (the content was not sent: the message may fail over)."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 flaky.test ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"DATA"):
                writer.close()
                return
            writer.write(ehlo_reply(pipelining) if line[:4] == b"EHLO" else b"250 ok\r\n")

    async def scenario() -> Outcome | transport.Stale:
        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        async with server:
            return await ask(server.sockets[0].getsockname()[1])

    outcome = run(scenario())
    assert isinstance(outcome, RelayDown) and outcome.error_code == SMTP_CONNECTION_ERROR


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("ending", ["close", "silence"])
def test_content_sent_without_its_reply_is_an_unknown_outcome(
    run: Run[Any], pipelining: bool, ending: str
) -> None:
    """354, the whole content, then the relay closes (or says nothing until the timeout):
    it may have taken the message, so this is not RelayDown (which fails over)."""
    received: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 flaky.test ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"DATA"):
                writer.write(b"354 go ahead\r\n")
                received.append(await reader.readuntil(b"\r\n.\r\n"))
                if ending == "silence":
                    await reader.read()  # until the client gives up and leaves
                writer.close()
                return
            writer.write(ehlo_reply(pipelining) if line[:4] == b"EHLO" else b"250 ok\r\n")

    async def scenario() -> Outcome | transport.Stale:
        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        async with server:
            return await ask(server.sockets[0].getsockname()[1], timeout=0.5)

    outcome = run(scenario())
    assert received == [content_for_data(MESSAGE)]
    assert isinstance(outcome, UnknownOutcome), outcome
    assert outcome.error_code == (SMTP_CONNECTION_ERROR if ending == "close" else SMTP_TIMEOUT)
    assert "may have taken the message" in outcome.detail
    assert not transport.session_usable(outcome)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        MESSAGE,
        b"a\r\nb\r\n",
        b"no final line break",
        b"bare\nline\nfeeds\n",
        b"bare\rcarriage\rreturns",
        b"mixed\r\nends\nand\r",
        b".starts with a dot\r\n",
        b"a\r\n.\r\n..\r\n...x\r\n",
        b"a\n.b\r\n",
        b"\r\n\r\n",
    ],
)
def test_content_is_what_aiosmtplib_would_send(data: bytes) -> None:
    """The shortcuts (nothing to normalise, no dot to stuff) change no byte."""
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
    assert content_for_data(data) == expected


def scripted_relay(
    replies: dict[bytes, bytes], delivered: list[bytes]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]:
    """A raw relay offering PIPELINING, answering each command from ``replies`` (else
    250) and recording each message whose content it received."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-scripted.test\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                body = b""
                while (chunk := await reader.readline()) not in (b".\r\n", b""):
                    body += chunk
                if chunk == b"":  # the client left without ending the content
                    break
                delivered.append(body)
                writer.write(b"250 2.0.0 queued\r\n")
            else:
                writer.write(replies.get(verb, b"250 ok\r\n"))
        writer.close()

    return serve


@pytest.mark.parametrize(
    ("rset_reply", "expected"),
    [(b"200 fine\r\n", "sent"), (b"502 5.5.1 RSET not implemented\r\n", "stale")],
)
def test_only_a_refused_rset_makes_a_session_stale(
    run: Run[Any], rset_reply: bytes, expected: str
) -> None:
    """An odd but positive RSET reply is a success (the content went: reporting STALE
    would send the message twice); a refused one is STALE and nothing was sent."""
    delivered: list[bytes] = []

    async def scenario() -> tuple[Outcome | transport.Stale, bool]:
        server = await asyncio.start_server(
            scripted_relay({b"RSET": rset_reply}, delivered), "127.0.0.1", 0
        )
        async with server:
            smtp = await session(server.sockets[0].getsockname()[1])
            try:
                await transport.send_message(smtp, "shop@example.com", "a@example.org", MESSAGE)
                second = await transport.send_message(
                    smtp, "shop@example.com", "b@example.org", MESSAGE, reset=True
                )
                return second, smtp.is_connected
            finally:
                await transport.close(smtp)

    second, connected = run(scenario())
    if expected == "sent":
        assert isinstance(second, Sent) and connected
        assert len(delivered) == 2
    else:
        assert second is transport.STALE and not connected  # closed: DATA may await content
        assert len(delivered) == 1


@pytest.mark.parametrize("recipient", ["a b@example.org", "x@y> NOTIFY=NEVER", '"q"@example.org'])
def test_an_address_unfit_for_a_path_is_never_written_into_a_group(
    run: Run[Any], relay: RecordingRelay, recipient: str
) -> None:
    """Validation at submission stops such addresses; should one get here, it goes
    through aiosmtplib's checked MAIL/RCPT, which refuses or quotes it."""

    async def scenario() -> Outcome | transport.Stale:
        smtp = await session(relay.port)
        try:
            return await transport.send_message(smtp, "shop@example.com", recipient, MESSAGE)
        finally:
            await transport.close(smtp)

    outcome = run(scenario())
    assert relay.pipelined_count == 0
    if isinstance(outcome, Bounced):
        assert outcome.code == 553
    else:  # reduced by aiosmtplib to one plain path, without parameters
        assert isinstance(outcome, Sent)
        ((rcpt,),) = [m.rcpt_tos for m in relay.wait_for(1)]
        assert not any(c in rcpt for c in ' <>"') and "NOTIFY" not in rcpt
