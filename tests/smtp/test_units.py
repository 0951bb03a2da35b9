"""The pieces without a network: the chunked DATA reader, reply rewriting, the per-IP
windows, header splitting and controls, the self-signed certificate."""

from __future__ import annotations

import asyncio
import logging
import ssl
import stat
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP

from postroute.kit.clock import FakeClock
from postroute.messages.header_block import split
from postroute.messages.ingest import parse
from postroute.smtp import replies
from postroute.smtp.data import read_message
from postroute.smtp.limits import SlidingWindow
from postroute.smtp.logsafe import EscapeControls, escape
from postroute.smtp.protocol import SubmissionSMTP, _parse_path
from postroute.smtp.tls import ensure_self_signed

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def read(
    stream: bytes, limit: int = 1000, reader_limit: int = 64
) -> tuple[bytes | None, bytes]:
    """(message, what is left in the stream) for ``stream`` fed at once."""
    reader = asyncio.StreamReader(limit=reader_limit)
    reader.feed_data(stream)
    reader.feed_eof()
    message = await read_message(reader, limit)
    return message, await reader.read()


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"..x\r\n...y\r\nz.\r\nend.\r\n.\r\n", b".x\r\n..y\r\nz.\r\nend.\r\n"),
        (
            b"x" * 300 + b"\r\n" + b"y" * 200 + b".\r\n.\r\n",
            b"x" * 300 + b"\r\n" + b"y" * 200 + b".\r\n",
        ),
        (b"no\nbare\rbreaks.\r\n.\r\n", b"no\nbare\rbreaks.\r\n"),
    ],
)
async def test_read_message_unstuffs_and_stops_at_the_dot_line(
    stream: bytes, message: bytes
) -> None:
    assert await read(stream + b"QUIT\r\n") == (message, b"QUIT\r\n")


async def test_read_message_over_the_limit_is_read_to_the_end_and_dropped() -> None:
    stream = b"x" * 70 + b"\r\n" + (b"y" * 500 + b".\r\n") * 5 + b".\r\nNOOP\r\n"
    assert await read(stream, limit=100) == (None, b"NOOP\r\n")
    exactly = b"z" * 98 + b"\r\n"
    assert await read(exactly + b".\r\n", limit=100) == (exactly, b"")
    assert await read(b"z" + exactly + b".\r\n", limit=100) == (None, b"")


@pytest.mark.parametrize("reader_limit", [4, 7, 64, 4096])  # chunks cut lines anywhere
async def test_read_message_size_excludes_the_dots_of_dot_stuffing(reader_limit: int) -> None:
    """RFC 1870 4: a message of exactly the limit whose lines start with dots (each sent
    with one more) is accepted, one byte more is not, whatever the chunks."""
    message = b".a\r\n" * 40 + b"..\r\n" * 20  # 240 bytes; 60 dots added when stuffed
    stuffed = b"." + message.replace(b"\r\n.", b"\r\n..")
    stream = stuffed + b".\r\nNOOP\r\n"
    assert await read(stream, limit=240, reader_limit=reader_limit) == (message, b"NOOP\r\n")
    assert await read(stream, limit=239, reader_limit=reader_limit) == (None, b"NOOP\r\n")


async def test_read_message_raises_when_the_client_leaves() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read(b"half a message\r\n")


@pytest.mark.parametrize(
    "arg",
    [
        "<shop@example.com>",
        "<shop@example.com> SIZE=2048 BODY=8BITMIME",
        "shop@example.com",
        "<>",
        "",
        "<@relay.example:shop@example.com>",
        '<"first last"@example.com>',
        "<chloé@exemple.fr> SMTPUTF8",
        "<shop@[127.0.0.1]>",
        "<not an address>",
        "<shop@example.com",
        "@",
    ],
)
async def test_mail_and_rcpt_paths_parse_as_stock_aiosmtpd(arg: str) -> None:
    stock = SMTP(None, hostname="mx.postroute.test")  # its own _getaddr, per call
    assert _parse_path(arg) == stock._getaddr(arg)
    assert _parse_path(arg) == stock._getaddr(arg)  # the remembered answer too
    ours = SimpleNamespace(local_part_limit=0)  # the override only reads this attribute
    assert SubmissionSMTP._getaddr(ours, arg) == stock._getaddr(arg)  # type: ignore[arg-type]


async def test_a_local_part_over_the_limit_is_refused_as_aiosmtpd_does() -> None:
    # async: aiosmtpd.SMTP takes the running loop (in a sync test it would make one)
    stock = SMTP(None, hostname="mx.postroute.test")
    stock.local_part_limit = 3
    ours = SimpleNamespace(local_part_limit=3)
    for arg in ("<abcd@example.com>", "<abc@example.com>"):
        assert SubmissionSMTP._getaddr(ours, arg) == stock._getaddr(arg)  # type: ignore[arg-type]


def test_rewrite_gives_aiosmtpd_replies_a_status() -> None:
    assert replies.rewrite("250 OK", max_size=10) == "250 2.0.0 OK"
    assert replies.rewrite("503 Error: need MAIL command", max_size=10) == (
        "503 5.5.1 Error: need MAIL command"
    )
    assert replies.rewrite("552 Error: Too much mail data", max_size=10) == str(
        replies.S552_TOO_BIG(max=10)
    )
    assert replies.rewrite("451 4.3.0 Already", max_size=10) == "451 4.3.0 Already"
    for untouched in ("220 mx ESMTP Postroute", "250-SIZE 10", "354 End data", "334 VXNlcg=="):
        assert replies.rewrite(untouched, max_size=10) == untouched


def test_multiline_folds_long_reasons_and_cleans_them() -> None:
    reasons = [f"reason number {i} " + "x" * 60 for i in range(12)]
    text = replies.multiline(replies.S550_REJECTED, [*reasons, "bad\r\nüber"])
    lines = text.split("\r\n")
    assert len(lines) > 1 and all(len(line) <= replies.MAX_LINE for line in lines)
    assert all(line.startswith("550-5.7.1 ") for line in lines[:-1])
    assert lines[-1].startswith("550 5.7.1 ") and lines[-1].endswith("bad??\\xfcber")


def test_sliding_window_counts_per_key_and_forgets() -> None:
    clock = FakeClock(NOW)
    window = SlidingWindow(2, clock)
    assert window.admit("a") and window.admit("a") and not window.admit("a")
    assert window.admit("b")
    clock.advance(30)
    assert not window.admit("a")
    clock.advance(31)
    assert window.count("a") == 0 and window.admit("a")
    assert "b" not in window._events  # swept once idle for a window


def test_split_is_lossless() -> None:
    raw = b"A: 1\r\nB: two\r\n\tlines\r\nC:\r\n\r\nbody\r\n\r\nD: not a header\r\n"
    fields, rest = split(raw)
    assert fields == [b"A: 1\r\n", b"B: two\r\n\tlines\r\n", b"C:\r\n"]
    assert rest == b"\r\nbody\r\n\r\nD: not a header\r\n"
    assert split(b"\r\nonly body\r\n") == ([], b"\r\nonly body\r\n")
    assert split(b"X: no body\r\n") == ([b"X: no body\r\n"], b"")


def test_parse_keeps_every_other_byte() -> None:
    raw = (
        b"Subject: =?utf-8?b?w6k=?=\r\nDate: x\r\nx-postroute-TAGS: a,,b\r\n"
        b"From: a@example.com\r\nX-List-Unsubscribe:<mailto:u@example.com>\r\n\r\nbody\r\n"
    )
    parsed = parse(raw, NOW)
    assert parsed.problems == []
    assert parsed.content == (
        b"Subject: =?utf-8?b?w6k=?=\r\nDate: x\r\nFrom: a@example.com\r\n"
        b"List-Unsubscribe:<mailto:u@example.com>\r\n\r\nbody\r\n"
    )
    assert (parsed.subject, parsed.tags, parsed.sender) == ("é", ["a", "b"], "a@example.com")
    untouched = b"Subject: s\r\nDate: x\r\nFrom: a@example.com\r\n\r\nbody\r\n"
    assert parse(untouched, NOW).content is untouched


def test_parse_reports_duplicate_controls() -> None:
    raw = (
        b"From: a@example.com\r\nSubject: s\r\nX-Postroute-Pool: a\r\nX-Postroute-Pool: b\r\n"
        b"X-Postroute-Metadata-k: 1\r\nX-Postroute-Metadata-k: 2\r\n"
        b"List-Unsubscribe: <a>\r\nX-List-Unsubscribe: <b>\r\n\r\nbody\r\n"
    )
    messages = [p.message for p in parse(raw, NOW).problems]
    assert messages == [
        "X-Postroute-Pool is given more than once",
        "X-Postroute-Metadata-k is given more than once",
        "more than one List-Unsubscribe (or X-List-Unsubscribe) header",
    ]


def test_self_signed_pair_is_made_once(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "tls"
    cert, key = ensure_self_signed(directory, "mx.example.com")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = cert.read_bytes()
    assert ensure_self_signed(directory, "mx.example.com") == (cert, key)
    assert cert.read_bytes() == first
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)  # a matching pair
    assert [p.name for p in directory.parent.iterdir()] == ["tls"]


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("MAIL FROM:<a@example.com>", "MAIL FROM:<a@example.com>"),
        ("café ünïcode", "café ünïcode"),  # printable: unchanged
        ("a\r\nb\tc", r"a\r\nb\tc"),
        ("\x1b[2J\x00\x7f", r"\x1b[2J\x00\x7f"),
        ("\x85 \u2028 \u202e \U000e0001", r"\x85 \u2028 \u202e \U000e0001"),
        ("\udcff", r"\udcff"),  # a byte kept by surrogateescape
    ],
)
def test_log_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped


def test_log_filter_escapes_the_formatted_message() -> None:
    record = logging.LogRecord(
        "mail.log", logging.WARNING, __file__, 1, "%r unrecognised: %s", ("peer", "X\rY"), None
    )
    assert EscapeControls().filter(record)
    assert record.getMessage() == r"'peer' unrecognised: X\rY"
    plain = logging.LogRecord("mail.log", logging.WARNING, __file__, 1, "%s: 100%%", ("ok",), None)
    assert EscapeControls().filter(plain)
    assert (plain.msg, plain.args, plain.getMessage()) == ("%s: 100%%", ("ok",), "ok: 100%")
