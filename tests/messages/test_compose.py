"""MIME composition: parse the bytes back and compare with the request."""

from __future__ import annotations

import base64
import email.policy
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.mime.text import MIMEText
from email.parser import BytesParser
from typing import Any

import pytest

from postroute.messages.compose import (
    LEGACY,
    _body,
    _canonical,
    _plain_body,
    _text_part,
    compose,
    new_message_id,
)
from postroute.messages.fields import Address
from postroute.messages.schemas import SendRequest
from postroute.preparation.headers import with_headers

DATE = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(random.Random(7).randbytes(2000))
BINARY = random.Random(42).randbytes(10_000)


def build(**changes: Any) -> SendRequest:
    data: dict[str, Any] = {
        "from": "sender@example.com",
        "to": ["rcpt@example.com"],
        "subject": "Hello",
        "text": "Hi there",
    }
    data.update(changes)
    return SendRequest.model_validate({k: v for k, v in data.items() if v is not ...})


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def wire_checked(raw: bytes) -> bytes:
    """Every line ends in CRLF, none is over 998 octets, no bare CR or LF anywhere."""
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")[:-1]
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert max(len(line) for line in lines) <= 998
    return raw


def composed(req: SendRequest, **kwargs: Any) -> tuple[bytes, EmailMessage]:
    raw = wire_checked(compose(req, date=DATE, **kwargs))
    return raw, parse(raw)


def canonical(text: str) -> str:
    """MIME text form: LF here (CRLF on the wire), and a final line break."""
    lines = re.split(r"\r\n|\r|\n", text)
    if lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def decoded(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def structure(part: EmailMessage) -> Any:
    if part.is_multipart():
        return (part.get_content_type(), [structure(p) for p in part.iter_parts()])  # type: ignore[arg-type]
    return part.get_content_type()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parts(message: EmailMessage) -> list[EmailMessage]:
    return [p for p in message.walk() if not p.is_multipart()]


# --- structure --------------------------------------------------------------------------


def test_text_only() -> None:
    text = "Héllo wörld\nsecond line\r\nthird \u2028 same line\n"
    raw, message = composed(build(text=text))
    assert structure(message) == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert decoded(message) == canonical(text)
    assert raw.isascii()  # 7-bit clean: qp or base64 where needed


def test_html_only() -> None:
    html = "<p>Grüße, 日本語</p>"
    _, message = composed(build(text=..., html=html))
    assert structure(message) == "text/html"
    assert decoded(message) == canonical(html)


def test_text_and_html_are_alternatives() -> None:
    _, message = composed(build(text="plain", html="<b>rich</b>"))
    assert structure(message) == ("multipart/alternative", ["text/plain", "text/html"])
    text, html = parts(message)
    assert decoded(text) == "plain\n" and decoded(html) == "<b>rich</b>\n"


def test_inline_images_are_related_to_the_html() -> None:
    html = '<p><img src="cid:logo@example"></p>'
    logo = {"filename": "logo.png", "content": b64(PNG), "content_id": "logo@example"}
    _, message = composed(build(html=html, attachments=[logo]))
    assert structure(message) == (
        "multipart/alternative",
        ["text/plain", ("multipart/related", ["text/html", "image/png"])],
    )
    related = list(message.iter_parts())[1]
    assert related.get_param("type") == "text/html"
    html_part, image = parts(message)[1:]
    assert decoded(html_part) == canonical(html)
    assert image["Content-ID"] == "<logo@example>"
    assert image.get_content_disposition() == "inline"
    assert image.get_filename() == "logo.png"
    assert image.get_content() == PNG


def test_attachments_make_it_mixed() -> None:
    attachments = [
        {"filename": "logo.png", "content": b64(PNG), "content_id": "logo"},
        {"filename": "data.bin", "content": b64(BINARY)},
        {"filename": "image.png", "content": b64(PNG)},
        {"filename": "rows.csv", "content": b64(b"a,b\r\n1,2\n")},
        {"filename": "empty.txt", "content": ""},
    ]
    _, message = composed(build(html="<img src=cid:logo>", attachments=attachments))
    assert structure(message) == (
        "multipart/mixed",
        [
            (
                "multipart/alternative",
                ["text/plain", ("multipart/related", ["text/html", "image/png"])],
            ),
            "application/octet-stream",
            "image/png",
            "text/csv",
            "text/plain",
        ],
    )
    files = [p for p in parts(message) if p.get_content_disposition() == "attachment"]
    assert [p.get_filename() for p in files] == ["data.bin", "image.png", "rows.csv", "empty.txt"]
    assert [p.get_payload(decode=True) for p in files] == [BINARY, PNG, b"a,b\r\n1,2\n", b""]
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in files)


def test_inline_image_without_html_is_attached() -> None:
    logo = {"filename": "logo.png", "content": b64(PNG), "content_id": "logo"}
    _, message = composed(build(attachments=[logo]))
    assert structure(message) == ("multipart/mixed", ["text/plain", "image/png"])
    image = parts(message)[1]
    assert image.get_content_disposition() == "inline" and image.get_content() == PNG


def test_non_ascii_filename_uses_rfc2231() -> None:
    name = "Résumé — 日本語 " + "x" * 120 + ".pdf"
    raw, message = composed(build(attachments=[{"filename": name, "content": b64(BINARY)}]))
    assert b"filename*" in raw
    attachment = parts(message)[1]
    assert attachment.get_filename() == name
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_payload(decode=True) == BINARY


# --- headers ----------------------------------------------------------------------------


def test_unicode_subject_and_display_names() -> None:
    subject = "Zoë Ünïcødé says 日本語 " * 6
    req = build(
        **{"from": "Zoë Ünïcødé <zoe@example.com>"},
        to=["日本語 <a@example.com>", '"Doe, John" <john@example.com>'],
        subject=subject,
    )
    raw, message = composed(req)
    assert raw.isascii()  # RFC 2047 encoded words, not raw UTF-8
    assert b"=?utf-8?" in raw
    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == "Zoë Ünïcødé"
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ("日本語", "a@example.com"),
        ("Doe, John", "john@example.com"),
    ]


@pytest.mark.parametrize("word", ["Zoë Ünïcødé ", "ab é ", "日本語 テスト ", "x"])
def test_long_unicode_text_wraps_without_losing_or_adding_spaces(word: str) -> None:
    for repeat in range(1, 40):
        text = word * repeat
        name = text[:256].strip()
        req = build(subject=text, to=[{"email": "a@example.com", "name": name}, "b@example.com"])
        raw, message = composed(req)
        assert message["Subject"] == text
        # A long name spans several encoded-words. RFC 2047 (6.2) says the folding
        # whitespace between them is not part of the text: the legacy decoder follows it,
        # while Python 3.11's address parser keeps a space there, so read the raw field.
        to_field = re.search(rb"\r\nTo: (.*?)\r\n(?! )", raw, re.S)
        assert to_field is not None
        encoded_name = to_field[1].decode().split(" <a@example.com>")[0].replace("\r\n", "")
        assert str(make_header(decode_header(encoded_name))) == name
        assert message["To"].addresses[1].addr_spec == "b@example.com"


@pytest.mark.parametrize(
    "name", ['Doe, "J" John', "back\\slash", "O'Brien (ops)", "Team <ops> @ Example", "Zoë, Dr."]
)
def test_display_names_with_specials_are_quoted_or_encoded(name: str) -> None:
    _, message = composed(build(to=[{"email": "a@example.com", "name": name}], cc="c@example.com"))
    [address] = message["To"].addresses
    assert (address.display_name, address.addr_spec) == (name, "a@example.com")
    assert message["Cc"].addresses[0].addr_spec == "c@example.com"


def test_long_subject_without_spaces_stays_within_line_limits() -> None:
    subject = "x" * 2000
    _, message = composed(build(subject=subject))  # wire_checked: no line over 998
    assert message["Subject"] == subject


def test_visible_headers_and_no_bcc() -> None:
    req = build(
        to=["a@example.com"],
        cc=["Carol <carol@example.com>"],
        bcc=["Hidden Person <Secret.Person@Hidden.example>", "other@hidden.example"],
        reply_to=["replies@example.com", "Team <team@example.com>"],
    )
    raw, message = composed(req)
    assert b"hidden" not in raw.lower() and b"secret" not in raw.lower()
    assert message["Bcc"] is None
    assert message["To"] == "a@example.com"
    assert message["Cc"] == "Carol <carol@example.com>"
    assert message["Reply-To"] == "replies@example.com, Team <team@example.com>"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime == DATE


def test_bcc_only_says_undisclosed_recipients() -> None:
    raw, message = composed(build(to=..., bcc=["secret@example.com"]))
    assert message["To"] == "undisclosed-recipients:;"
    assert b"secret" not in raw


def test_no_per_recipient_headers() -> None:
    _, message = composed(build(headers={"X-Campaign": "spring"}))
    assert message["Message-ID"] is None
    assert not [name for name in message if name.lower().startswith("x-postroute-")]
    assert message["X-Campaign"] == "spring"


def test_custom_headers() -> None:
    url = "<https://example.com/unsubscribe/" + "t" * 300 + ">"
    headers = {"List-Unsubscribe": url, "X-Unicode": "Zoë " * 40, "Sender": "not parsed"}
    raw, message = composed(build(headers=headers))
    assert f"List-Unsubscribe: {url}\r\n".encode() in raw  # verbatim, not encoded-words
    assert message["List-Unsubscribe"] == url
    assert message["X-Unicode"] == "Zoë " * 40
    assert b"Sender: not parsed\r\n" in raw


def test_date_is_given_by_the_caller() -> None:
    local = datetime(2026, 3, 14, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
    raw = wire_checked(compose(build(), date=local))
    assert parse(raw)["Date"] == "Sat, 14 Mar 2026 10:00:00 -0500"
    naive = compose(build(), date=datetime(2026, 3, 14, 15, 0))
    assert parse(naive)["Date"].datetime == datetime(2026, 3, 14, 15, 0, tzinfo=UTC)


def test_default_from() -> None:
    pool_from = Address(email="noreply@example.com", name="Example")
    _, message = composed(build(**{"from": ...}), default_from=pool_from)
    assert message["From"] == "Example <noreply@example.com>"
    _, message = composed(build(), default_from=pool_from)  # the request's own From wins
    assert message["From"] == "sender@example.com"
    with pytest.raises(ValueError, match="no From address"):
        compose(build(**{"from": ...}), date=DATE)


def test_idn_domain_is_punycode_in_headers() -> None:
    raw, message = composed(build(to=["Ann <ann@bücher.example>"]))
    assert raw.isascii()
    assert message["To"].addresses[0].domain == "xn--bcher-kva.example"


def test_internationalised_mailbox_needs_utf8_headers() -> None:
    raw = wire_checked(compose(build(to=["日本語 <用户@例子.广告>"], subject="Zoë"), date=DATE))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert "To: =?utf-8?b?5pel5pys6Kqe?= <用户@例子.广告>\r\n".encode() in head  # RFC 6532
    assert body.isascii()
    # BytesParser reads headers as ASCII; an SMTPUTF8 reader decodes them as UTF-8 first.
    message = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ("日本語", "用户@例子.广告")
    ]
    assert message["Subject"] == "Zoë"


# --- bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii",
        "a very long line " * 400,
        "Zoë Ünïcødé\r\n日本語\n\nend without newline",
        "日本語" * 500,
        "trailing spaces   \nFrom the start of a line\n.\n..dots\n",
        "\n\nleading blank lines",
    ],
)
def test_text_survives_encoding(text: str) -> None:
    raw, message = composed(build(text=text, html=f"<pre>{text}</pre>"))
    assert raw.isascii()
    plain, html = parts(message)
    assert decoded(plain) == canonical(text)
    assert decoded(html) == canonical(f"<pre>{text}</pre>")
    assert plain["Content-Transfer-Encoding"] in ("7bit", "quoted-printable", "base64")


COMPAT32_CRLF = email.policy.compat32.clone(linesep="\r\n", mangle_from_=False)


@pytest.mark.parametrize(
    "value",
    [
        'text/plain; charset="us-ascii"',
        "7bit",
        "x" * 64,  # "Subject: " + 64 + ... on the limit of 78
        "x" * 65,
        "two  spaces",
        " leading",
        "trailing ",
        "tab\there",
        "Zoë",
        "word " * 30,
        'multipart/alternative; boundary="===============1234567890123456789=="',
    ],
)
def test_the_legacy_policy_folds_headers_as_compat32_does(value: str) -> None:
    """Its shortcut for short ASCII values gives compat32's bytes exactly."""
    for name in ("Content-Type", "Subject", "X-A"):
        assert LEGACY.fold_binary(name, value) == COMPAT32_CRLF.fold_binary(name, value)


@pytest.mark.parametrize("subtype", ["plain", "html"])
@pytest.mark.parametrize("text", ["Hi there\n", "a\nb\n\nFrom x\n.\n", "  spaced  \n"])
def test_an_ascii_text_part_is_what_mimetext_writes(subtype: str, text: str) -> None:
    """Built without MIMEText's charset machinery, the part is byte for byte the same."""
    expected = MIMEText(text, subtype, "us-ascii")
    del expected["MIME-Version"]
    assert _text_part(text, subtype).as_bytes(policy=LEGACY) == expected.as_bytes(
        policy=COMPAT32_CRLF
    )


_BOUNDARY = re.compile(rb'boundary="([^"]+)"')


def _boundary_named(raw: bytes) -> bytes:
    """``raw`` with its multipart boundary (random) replaced by one fixed name."""
    found = _BOUNDARY.search(raw)
    return raw.replace(found.group(1), b"BOUNDARY") if found else raw


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("Hi there", None),
        (None, "<p>Hi</p>"),
        ("Hi there\r\nsecond\rthird", "<p>Hi</p>\n<p>again</p>\n\n"),
        ("a\nb\n\nFrom x\n.\n", "  spaced  "),
        ("x" * 998, "y" * 998 + "\n" + "z"),
        ("--===============0000000000000000001==\n", "<p>-- not a boundary</p>"),
    ],
)
def test_a_plain_body_is_what_the_email_package_writes(text: str | None, html: str | None) -> None:
    """Text and html of ASCII with short lines (the common message) are written without
    the email package's generator, and give its bytes exactly (but the random boundary)."""
    req = build(text=text, html=html)
    fast = _plain_body(req)
    assert fast is not None
    body, policy = _body(req)
    assert _boundary_named(fast) == _boundary_named(body.as_bytes(policy=policy))
    raw = compose(req, date=DATE)
    assert _boundary_named(raw).endswith(_boundary_named(fast))
    parsed = parse(raw)
    if text and html:
        assert parsed.get_content_type() == "multipart/alternative"
        plain, rich = parsed.get_payload()
        assert plain.get_content().replace("\r\n", "\n") == _canonical(text)
        assert rich.get_content().replace("\r\n", "\n") == _canonical(html)


@pytest.mark.parametrize(
    "changes",
    [
        {"text": "Zoë"},  # not ASCII: quoted-printable
        {"html": "<p>" + "x" * 999 + "</p>"},  # a line too long for 7bit
        {"attachments": [{"filename": "a.txt", "content": base64.b64encode(b"a").decode()}]},
    ],
)
def test_other_bodies_are_left_to_the_email_package(changes: dict[str, Any]) -> None:
    assert _plain_body(build(**changes)) is None


# --- per-recipient headers --------------------------------------------------------------


def test_new_message_id() -> None:
    assert new_message_id("msg_01ABC", "mail.example.com") == "<msg_01ABC@mail.example.com>"


def test_with_headers_prepends_without_touching_the_content() -> None:
    content = compose(
        build(html="<p>hi</p>", attachments=[{"filename": "a.bin", "content": b64(BINARY)}]),
        date=DATE,
    )
    message_id = new_message_id("msg_01ABC", "example.com")
    added = [
        ("Message-ID", message_id),
        ("X-Postroute-Message-ID", "msg_01ABC"),
        ("X-Postroute-Account-ID", "acct_01XYZ"),
    ]
    out = wire_checked(with_headers(content, added))
    assert out.endswith(content)
    assert out[: len(out) - len(content)] == (
        b"Message-ID: <msg_01ABC@example.com>\r\n"
        b"X-Postroute-Message-ID: msg_01ABC\r\n"
        b"X-Postroute-Account-ID: acct_01XYZ\r\n"
    )
    message = parse(out)
    assert message["Message-ID"] == message_id
    assert message["X-Postroute-Account-ID"] == "acct_01XYZ"
    assert list(message.keys())[:4] == [
        "Message-ID",
        "X-Postroute-Message-ID",
        "X-Postroute-Account-ID",
        "From",
    ]
    assert parts(message)[-1].get_payload(decode=True) == BINARY


def test_with_headers_encodes_non_ascii_and_long_values() -> None:
    content = compose(build(), date=DATE)
    value = "Zoë Ünïcødé 日本語 " * 20
    out = wire_checked(with_headers(content, [("X-Note", value), ("X-Long", "y" * 1200)]))
    assert out[: len(out) - len(content)].isascii()
    message = parse(out)
    assert message["X-Note"] == value
    assert message["X-Long"] == "y" * 1200


def test_with_headers_keeps_raw_client_bytes_and_their_line_ends() -> None:
    raw = b"From: a@example.com\nSubject: caf\xc3\xa9\n\nbody \xff bytes\n"
    out = with_headers(raw, [("X-Postroute-Message-ID", "msg_1")])
    assert out == b"X-Postroute-Message-ID: msg_1\n" + raw
    crlf = raw.replace(b"\n", b"\r\n")
    assert with_headers(crlf, [("X-A", "1")]) == b"X-A: 1\r\n" + crlf


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Bad Name", "x"),
        ("X-A:", "x"),
        ("X-A", "x\r\nBcc: victim@example.com"),
        ("X-A", "x\n"),
        ("X-A", "\x00"),
    ],
)
def test_with_headers_refuses_injection(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        with_headers(b"Subject: x\r\n\r\nbody\r\n", [(name, value)])
