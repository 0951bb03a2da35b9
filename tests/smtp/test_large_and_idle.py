"""Large messages and the idle timeout during DATA.

Messages from 256 KiB up are parsed in a worker thread (``handler.THREAD_AT``): they must
reach the relay with the body byte for byte and the header controls removed, and while
one session is in the middle of a large DATA another completes a whole transaction. The
size limit holds at its exact boundary. Data still arriving in DATA counts as activity
for the idle timeout; a pause longer than the timeout mid-DATA gets a 421.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random

import httpx
import pytest

from postroute.config import Settings
from postroute.delivery.worker import Worker
from postroute.models import Message
from postroute.runtime import Runtime
from postroute.smtp import replies
from postroute.smtp.handler import THREAD_AT
from tests.conftest import Tenant
from tests.smtp.conftest import BASIC, Ports, RawClient, message, queued_id
from tests.support.relay import RecordingRelay

pytestmark = pytest.mark.usefixtures("relay_pool", "loopback_credential")

DEFAULT_SIZE = 26_214_400  # 25 MiB, SPEC 5
CONTROLS = (
    b"X-Postroute-Tags: large, attachment\r\n"
    b"X-Postroute-Pool: main\r\n"
    b"X-Postroute-Metadata-order: 42\r\n"
    b"X-Postroute-Track-Opens: true\r\n"
    b"X-Postroute-Track-Clicks: false\r\n"
)
CONTROL_NAMES = (
    b"X-Postroute-Tags",
    b"X-Postroute-Pool:",
    b"X-Postroute-Metadata",
    b"X-Postroute-Track",
)


def stuffed(data: bytes) -> bytes:
    """``data`` dot-stuffed for the wire (RFC 5321 4.5.2)."""
    data = data.replace(b"\r\n.", b"\r\n..")
    return b"." + data if data.startswith(b".") else data


def base64_lines(size: int, seed: int = 0) -> bytes:
    """``size`` random bytes as base64 lines of 76 characters (no line ends in a dot)."""
    payload = random.Random(seed).randbytes(size)
    return base64.encodebytes(payload).replace(b"\n", b"\r\n")


def attachment_message(size: int) -> tuple[bytes, bytes]:
    """(message, body): a multipart message with an 8-bit text part and a base64
    attachment of ``size`` bytes."""
    headers = (
        b"From: Shop <shop@example.com>\r\n"
        b"To: customer@example.org\r\n"
        b"Subject: Your invoice\r\n" + CONTROLS + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    )
    body = (
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe, the invoice is attached.\r\n"
        b".A line that starts with a dot\r\n"
        b"--b1\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="invoice.bin"\r\n'
        b"\r\n" + base64_lines(size) + b"--b1--\r\n"
    )
    return headers + b"\r\n" + body, body


def eight_bit_message(lines: int) -> tuple[bytes, bytes]:
    """(message, body): a text body of raw 8-bit lines (every byte 0x80-0xFF, not UTF-8),
    some starting with a dot, some ending with one. (No line over 998 octets: the
    recording relay, stock aiosmtpd, refuses those.)"""
    headers = (
        b"From: Shop <shop@example.com>\r\n"
        b"To: customer@example.org\r\n"
        b"Subject: Raw 8-bit\r\n" + CONTROLS + b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
    )
    high = bytes(range(0x80, 0x100))
    rows = []
    for i in range(lines):
        line = b"%05d " % i + high
        if i % 7 == 0:
            line = b"." + line
        if i % 5 == 0:
            line += b"."
        rows.append(line + b"\r\n")
    body = b"".join(rows)
    return headers + b"\r\n" + body, body


async def open_session(ports: Ports, opened: list[RawClient]) -> RawClient:
    raw = await RawClient.connect(ports.starttls)
    opened.append(raw)
    assert (await raw.command("EHLO app.example.com"))[0] == 250
    return raw


async def start_data(raw: RawClient, mail_options: str = "") -> None:
    """MAIL, RCPT and DATA, up to the 354."""
    mail = f"MAIL FROM:<shop@example.com>{mail_options}".rstrip()
    assert (await raw.command(mail))[0] == 250
    assert (await raw.command("RCPT TO:<customer@example.org>"))[0] == 250
    assert (await raw.command("DATA"))[0] == 354


async def send_in_chunks(raw: RawClient, data: bytes, chunk: int) -> None:
    for start in range(0, len(data), chunk):
        await raw.send(data[start : start + chunk])


def assert_relayed_intact(data: bytes, body: bytes) -> None:
    """The relayed message: the body byte for byte, no header control left."""
    head, sep, relayed_body = data.partition(b"\r\n\r\n")
    assert sep and relayed_body == body
    for name in CONTROL_NAMES:
        assert name not in head, name
    assert b"\r\nSubject: " in head


LARGE = {
    "3 MiB base64 attachment": lambda: attachment_message(2_300_000),
    "raw 8-bit lines": lambda: eight_bit_message(3000),
}


@pytest.mark.parametrize("shape", LARGE)
async def test_large_message_reaches_relay_byte_for_byte(
    shape: str,
    ports: Ports,
    raw_clients: list[RawClient],
    client: httpx.AsyncClient,
    tenant: Tenant,
    runtime: Runtime,
    relay: RecordingRelay,
    worker: Worker,
) -> None:
    data, body = LARGE[shape]()
    assert len(data) >= THREAD_AT  # parsed in a worker thread
    raw = await open_session(ports, raw_clients)
    await start_data(raw, " BODY=8BITMIME")
    await send_in_chunks(raw, stuffed(data) + b".\r\n", 256 * 1024)
    code, text = await raw.reply()
    assert code == 250, text
    message_id = queued_id(text)

    stored = (await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)).json()
    assert sorted(stored["tags"]) == ["attachment", "large"]
    assert stored["metadata"] == {"order": "42"}
    assert stored["requested_pool"] == "main"
    async with runtime.sessions() as session:
        row = await session.get(Message, message_id)
        assert row is not None and (row.track_opens, row.track_clicks) == (True, False)

    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    assert received.rcpt_tos == ("customer@example.org",)
    assert_relayed_intact(received.data, body)
    assert received.parsed()["X-Postroute-Message-ID"] == message_id


async def test_small_transaction_completes_while_a_large_data_is_open(
    ports: Ports,
    raw_clients: list[RawClient],
    relay: RecordingRelay,
    worker: Worker,
) -> None:
    data, body = attachment_message(4_000_000)  # about 5.3 MiB on the wire
    wire = stuffed(data) + b".\r\n"
    half = len(wire) // 2
    finished: list[str] = []

    large = await open_session(ports, raw_clients)
    await start_data(large)
    await send_in_chunks(large, wire[:half], 128 * 1024)  # then it pauses mid-DATA

    small = await open_session(ports, raw_clients)
    await start_data(small)
    await small.send(BASIC + b".\r\n")
    code, text = await small.reply()
    assert code == 250, text
    finished.append("small")
    assert (await small.command("QUIT"))[0] == 221

    await send_in_chunks(large, wire[half:], 128 * 1024)
    code, text = await large.reply()
    assert code == 250, text
    finished.append("large")
    assert finished == ["small", "large"]
    large_id = queued_id(text)

    await worker.drain()
    received = await relay.wait_for_async(2)
    by_id = {m.parsed()["X-Postroute-Message-ID"]: m for m in received}
    assert_relayed_intact(by_id[large_id].data, body)


async def test_default_size_limit_is_advertised_and_enforced_at_mail(
    ports: Ports, raw_clients: list[RawClient], settings: Settings
) -> None:
    assert settings.smtp_max_message_bytes == DEFAULT_SIZE
    raw = await open_session(ports, raw_clients)
    _, text = await raw.command("EHLO app.example.com")
    assert f"SIZE {DEFAULT_SIZE}" in text.split("\n")
    assert (await raw.command(f"MAIL FROM:<shop@example.com> SIZE={DEFAULT_SIZE}"))[0] == 250
    assert (await raw.command("RSET"))[0] == 250
    reply = await raw.command(f"MAIL FROM:<shop@example.com> SIZE={DEFAULT_SIZE + 1}")
    too_big = replies.S552_TOO_BIG(max=DEFAULT_SIZE)
    assert reply == (552, too_big.message.decode())
    assert reply[1] == "5.3.4 Message size exceeds fixed maximum message size (26214400 bytes)"


LIMIT = 4096


def exactly(size: int, *, dotted: bool) -> bytes:
    """A valid message of exactly ``size`` bytes (before dot-stuffing); with ``dotted``,
    some body lines start with a dot (one more byte each on the wire)."""
    line = ".dotted line\r\n" if dotted else "plain line\r\n"
    data = message("From: shop@example.com", "Subject: Boundary", body=line * 4)
    filler = size - len(data) - 2
    assert filler > 0
    return data + b"x" * filler + b"\r\n"


@pytest.mark.parametrize("dotted", [False, True], ids=["plain", "dot-stuffed lines"])
@pytest.mark.parametrize("smtp_overrides", [{"smtp_max_message_bytes": LIMIT}], indirect=True)
async def test_size_limit_at_its_exact_boundary(
    dotted: bool, ports: Ports, raw_clients: list[RawClient]
) -> None:
    """RFC 1870 4: the size counts the message's octets, not the terminating dot nor the
    dots added by dot-stuffing. A message of exactly the limit is accepted; one byte
    more is a 552 naming the limit, and the session goes on."""
    raw = await open_session(ports, raw_clients)
    over = exactly(LIMIT + 1, dotted=dotted)
    await start_data(raw)
    await raw.send(stuffed(over) + b".\r\n")
    assert await raw.reply() == (
        552,
        "5.3.4 Message size exceeds fixed maximum message size (4096 bytes)",
    )

    at_limit = exactly(LIMIT, dotted=dotted)
    await start_data(raw)
    await raw.send(stuffed(at_limit) + b".\r\n")
    code, text = await raw.reply()
    assert code == 250, text


IDLE = 0.5  # seconds
PAUSE = 0.15  # shorter than IDLE
CHUNKS = 10  # PAUSE * CHUNKS is three times IDLE


def trickle_chunks(shape: str) -> list[bytes]:
    """The body of a message as ``CHUNKS`` pieces of about 2 KiB, each ending at a line end."""
    if shape == "text lines ending in a full stop":
        return [
            b"Line %d of the letter, ending with a full stop.\r\n" % i * 40 for i in range(CHUNKS)
        ]
    return [base64_lines(1500, seed=i) for i in range(CHUNKS)]


@pytest.mark.parametrize("shape", ["text lines ending in a full stop", "base64 lines"])
@pytest.mark.parametrize("smtp_overrides", [{"smtp_idle_timeout_seconds": IDLE}], indirect=True)
async def test_data_still_arriving_is_activity(
    shape: str, ports: Ports, raw_clients: list[RawClient]
) -> None:
    """Pauses shorter than the idle timeout, for three times its length in all: 250."""
    raw = await open_session(ports, raw_clients)
    await start_data(raw)
    await raw.send(message("From: shop@example.com", "Subject: Slow", body=""))
    reply = asyncio.create_task(raw.reply())  # read at once: a 421 must not be missed
    with contextlib.suppress(ConnectionError):  # the server closed after its 421
        for chunk in [*trickle_chunks(shape), b".\r\n"]:
            await asyncio.sleep(PAUSE)
            await raw.send(chunk)
    code, text = await reply
    assert code == 250, (code, text)


@pytest.mark.parametrize("smtp_overrides", [{"smtp_idle_timeout_seconds": IDLE}], indirect=True)
async def test_pause_longer_than_the_idle_timeout_mid_data_is_421(
    ports: Ports, raw_clients: list[RawClient], client: httpx.AsyncClient, tenant: Tenant
) -> None:
    raw = await open_session(ports, raw_clients)
    await start_data(raw)
    await raw.send(message("From: shop@example.com", "Subject: Stalled", body=""))
    for chunk in trickle_chunks("text lines ending in a full stop")[:3]:  # some activity
        await asyncio.sleep(PAUSE)
        await raw.send(chunk)
    # Then nothing more: the server gives up IDLE seconds later, mid-DATA.
    assert await raw.reply() == (
        421,
        replies.S421_TIMEOUT(host="mx.postroute.test").message.decode(),
    )
    assert await raw.closed()
    assert (await client.get("/v1/messages", headers=tenant.headers)).json()["data"] == []
