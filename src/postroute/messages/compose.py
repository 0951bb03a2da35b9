"""MIME composition: the content a send request shares across all its recipients.

``compose`` writes From, To, Cc (never Bcc), Reply-To, Subject, Date,
MIME-Version, the custom headers and the body; per-recipient headers
(Message-ID, X-Postroute-*) are put in front of that content with
``preparation.headers.with_headers`` right before relaying, without touching the rest.

Structure of the body::

    multipart/mixed                      only with regular attachments
      multipart/alternative              only with both text and html
        text/plain
        multipart/related                only with inline images (content_id)
          text/html
          image/...                      Content-ID: <cid>, inline
      application/...                    the attachments

Encoding is left to the standard ``email`` package: RFC 2047 encoded-words for
non-ASCII header text (``email.header.Header``), RFC 2231 for non-ASCII
filenames, quoted-printable or base64 for bodies (7-bit clean), CRLF line ends,
no line over 998 octets. Bodies get CRLF line ends and a final line break
(MIME's canonical text form).

The common body, text and html of ASCII with short lines and no attachment, is written
directly (``_plain_body``): the same bytes the email package writes for it (a test
compares them), without its generator, which writes line by line: about 25 of the
110 us of CPU that checking, composing and planning a 2 KB message took.

Text parts (``MIMEText``) and their multipart/alternative are legacy (compat32) parts
and are written with a compat32 policy (CRLF, no "From " mangling): for their short
ASCII headers it writes the same bytes as the SMTP policy at less than half the cost.
A message with attachments is written with the SMTP policy throughout.

Why ``email.header.Header`` and not the policy-based header folding: on Python
3.11 the latter loses or adds spaces when a long non-ASCII Subject or display
name wraps between encoded-words (CPython gh-144156); ``Header`` puts every
space inside the encoded text and round-trips exactly.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address as Mailbox
from email.message import Message, MIMEPart
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

from postroute.messages.fields import Address, Attachment
from postroute.messages.schemas import SendRequest
from postroute.preparation.headers import MAX_LINE, header_line

# For the body parts: CRLF line ends and no 8-bit data (qp or base64 whenever needed).
POLICY = email_policy.SMTP.clone(cte_type="7bit")


class _LegacyPolicy(email_policy.Compat32):
    """compat32 that writes a short ASCII header as it stands: the bytes ``Header`` folding
    gives such a value (it fits on one line: nothing to fold or encode), without building
    a ``Header`` for it. Longer or non-ASCII values are folded by compat32 as ever."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (
            isinstance(value, str)
            and value.isascii()
            and len(name) + 2 + len(value) <= 78
            and value == value.strip()
            and "  " not in value
            and "\t" not in value
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


# For bodies of text parts only (no attachment): the same bytes as POLICY for the short
# ASCII part headers these have, at a fraction of the cost, because the generator does
# not re-parse each header through the header registry. No "From " mangling, as POLICY.
LEGACY = _LegacyPolicy(linesep="\r\n", mangle_from_=False)
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
CRLF = "\r\n"


def new_message_id(message_id: str, domain: str) -> str:
    """``<msg_01H...@example.com>``: the Message-ID header value of one message."""
    return f"<{message_id}@{domain}>"


def compose(req: SendRequest, *, date: datetime, default_from: Address | None = None) -> bytes:
    """The MIME content shared by every recipient of ``req``, as CRLF bytes.

    ``default_from`` (the pool's ``from_email``) is used when the request has no From.
    No Message-ID and no X-Postroute-* headers: see ``preparation.prepare``. An address
    whose local part is not ASCII is written in UTF-8 (RFC 6532): such a message needs
    SMTPUTF8 on the way out.
    """
    sender = req.sender or default_from
    if sender is None:
        raise ValueError("the message has no From address and no default was given")
    head = [_addresses("From", [sender])]
    if req.to:
        head.append(_addresses("To", req.to))
    elif not req.cc:  # as Postfix does: say the recipients are hidden rather than omit To
        head.append(header_line("To", "undisclosed-recipients:;"))
    if req.cc:
        head.append(_addresses("Cc", req.cc))
    if req.reply_to:
        head.append(_addresses("Reply-To", req.reply_to))
    head.append(header_line("Subject", req.subject))
    aware = date if date.tzinfo is not None else date.replace(tzinfo=UTC)
    head.append(header_line("Date", _date(aware)))
    head.append(header_line("MIME-Version", "1.0"))
    head.extend(header_line(name, value) for name, value in req.headers.items())
    written = _plain_body(req)
    if written is None:
        body, policy = _body(req)
        written = body.as_bytes(policy=policy)
    return "".join(head).encode("utf-8") + written


def _addresses(name: str, addresses: Sequence[Address]) -> str:
    """One mailbox per line; non-ASCII display names as encoded-words."""
    return f"{name}: " + f",{CRLF} ".join(_mailbox(a) for a in addresses) + CRLF


@lru_cache(maxsize=1024)  # the sender of a batch, over and over
def _mailbox(address: Address) -> str:
    # The IDNA (xn--) domain where the local part is ASCII; else UTF-8 as it stands.
    local, _, domain = (address.ascii_email or address.email).rpartition("@")
    if not address.name:
        return f"{local}@{domain}"
    if address.name.isascii():  # quoted as needed by the email package
        return str(Mailbox(display_name=address.name, username=local, domain=domain))
    return f"{Header(address.name, 'utf-8').encode(linesep=CRLF)} <{local}@{domain}>"


@lru_cache(maxsize=8)
def _date(when: datetime) -> str:
    """RFC 5322 date; cached: every message of a request has the same one."""
    return format_datetime(when)


def _body(req: SendRequest) -> tuple[Message, email_policy.Policy]:
    """The body part and the policy to write it with: text parts alone are legacy
    (compat32) parts, written with LEGACY; a tree with attachments is written with POLICY."""
    text = _text_part(req.text, "plain") if req.text and not req.text.isspace() else None
    html = _text_part(req.html, "html") if req.html and not req.html.isspace() else None
    files = req.attachments
    if html is not None and req.inline_attachments:
        images = [_file_part(a) for a in req.inline_attachments]
        html = _multipart("related", [html, *images], 'type="text/html"')
        files = req.body_attachments
    # Without an html part, inline images travel as (inline) attachments.
    parts = [part for part in (text, html) if part is not None]
    if not parts:
        raise ValueError("the message has neither text nor html")  # validation prevents it
    if not req.attachments:
        if len(parts) == 1:
            return parts[0], LEGACY
        alternative = MIMEMultipart("alternative", _subparts=parts)
        del alternative["MIME-Version"]
        return alternative, LEGACY
    body = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
    if files:
        body = _multipart("mixed", [body, *(_file_part(a) for a in files)])
    return body, POLICY


def _plain_body(req: SendRequest) -> bytes | None:
    """The body of the common message, text and html parts of ASCII with short lines and
    no attachment, written here: the bytes the email package writes for it (one 7bit part,
    or a multipart/alternative of them), at a fraction of its cost (its generator writes
    line by line). None for any other message."""
    if req.attachments:
        return None
    parts: list[str] = []
    for content, subtype in ((req.text, "plain"), (req.html, "html")):
        if not content or content.isspace():
            continue
        text = _canonical(content)
        if not (text.isascii() and _short(text)):
            return None
        parts.append(
            f'Content-Type: text/{subtype}; charset="us-ascii"{CRLF}'
            f"Content-Transfer-Encoding: 7bit{CRLF}{CRLF}{text.replace(chr(10), CRLF)}"
        )
    if len(parts) < 2:
        return parts[0].encode("ascii") if parts else None
    boundary = _boundary(parts)
    between = f"{CRLF}--{boundary}{CRLF}"
    return (
        f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"{CRLF}{CRLF}'
        f"--{boundary}{CRLF}{between.join(parts)}{CRLF}--{boundary}--{CRLF}"
    ).encode("ascii")


def _boundary(parts: Sequence[str]) -> str:
    """A multipart boundary as the email package makes them, found in no part."""
    while True:
        boundary = "=" * 15 + f"{secrets.randbelow(sys.maxsize):019d}" + "=="
        if not any(boundary in part for part in parts):
            return boundary


def _canonical(content: str) -> str:
    """LF line ends and a final line break."""
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def _short(text: str) -> bool:
    """No line over 998 characters (7bit and 8bit allow no more)."""
    return all(len(line) <= MAX_LINE for line in text.split("\n"))


def _text_part(content: str, subtype: str) -> Message:
    """A text part through the email package's ``MIMEText``: its fixed headers are not
    re-parsed by the header registry (most of ``set_content``'s cost). 7bit for ASCII
    with short lines, quoted-printable otherwise; canonical CRLF line ends."""
    text = _canonical(content)
    if text.isascii() and _short(text):
        # What MIMEText(text, subtype, "us-ascii") builds, set directly: its charset
        # machinery would parse and rebuild Content-Type once more for each part.
        plain = Message()
        plain["Content-Type"] = f'text/{subtype}; charset="us-ascii"'
        plain["Content-Transfer-Encoding"] = "7bit"
        plain.set_payload(text)
        return plain
    # MIMEText hands the charset to set_payload, which takes a Charset object too.
    # Built under the legacy policy (headers stored as plain strings); serialised with
    # POLICY like the rest of the message.
    part = MIMEText(text, subtype, _UTF8_QP)  # type: ignore[arg-type]
    del part["MIME-Version"]  # the message's own header says it once
    return part


def _file_part(attachment: Attachment) -> MIMEPart:
    maintype, subtype = attachment.mime_type
    part = MIMEPart(policy=POLICY)
    part.set_content(
        attachment.content,
        maintype,
        subtype,
        disposition="inline" if attachment.inline else "attachment",
        filename=attachment.filename,
        cid=f"<{attachment.content_id}>" if attachment.inline else None,
        params={"name": attachment.filename},  # for clients that only read Content-Type
    )
    return part


def _multipart(subtype: str, parts: Sequence[Message], params: str = "") -> Message:
    container: Message = MIMEPart(policy=POLICY)
    container["Content-Type"] = f"multipart/{subtype}" + (f"; {params}" if params else "")
    for part in parts:
        container.attach(part)
    return container
