"""MIME composition: the content a send request shares across all its recipients.

``compose`` writes From, To, Cc (never Bcc), Reply-To, Subject, Date,
MIME-Version, the custom headers and the body; per-recipient headers
(Message-ID, X-Postroute-*) are put in front of that content with
``with_headers`` right before relaying, without touching the rest.

Structure of the body::

    multipart/mixed                      only with regular attachments
      multipart/alternative              only with both text and html
        text/plain
        multipart/related                only with inline images (content_id)
          text/html
          image/...                      Content-ID: <cid>, inline
      application/...                    the attachments

Encoding is left to the standard ``email`` package: RFC 2047 for non-ASCII
header text, RFC 2231 for non-ASCII filenames, quoted-printable or base64 for
bodies (7-bit clean output), CRLF line ends and lines within 998 octets.
Bodies get CRLF line ends and a final line break (MIME's canonical text form).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address as Mailbox
from email.headerregistry import BaseHeader, Group, HeaderRegistry
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy

from postroute.messages.schemas import Address, Attachment, SendRequest
from postroute.messages.validation import HEADER_NAME

# CRLF line ends, RFC 2047 headers, and no 8-bit bodies: qp or base64 whenever needed.
POLICY = email_policy.SMTP.clone(cte_type="7bit")
# Only for headers of a message with internationalised (non-ASCII local part) addresses,
# which must travel with SMTPUTF8 anyway (RFC 6531/6532): raw UTF-8 in the header block.
POLICY_UTF8 = POLICY.clone(utf8=True)
_LF_POLICY = POLICY.clone(linesep="\n")

MAX_LINE = 998  # RFC 5322 2.1.1, octets without the CRLF
# Caller-given headers are text to the email package whatever their name: "Sender: x"
# must not be reparsed as an address, nor "Resent-Date: x" as a date.
_AS_TEXT = HeaderRegistry(use_default_map=False)


def new_message_id(message_id: str, domain: str) -> str:
    """``<msg_01H...@example.com>``: the Message-ID header value of one message."""
    return f"<{message_id}@{domain}>"


def compose(req: SendRequest, *, date: datetime, default_from: Address | None = None) -> bytes:
    """The MIME content shared by every recipient of ``req``, as CRLF bytes.

    ``default_from`` (the pool's ``from_email``) is used when the request has no From.
    No Message-ID and no X-Postroute-* headers: see :func:`with_headers`.
    """
    sender = req.sender or default_from
    if sender is None:
        raise ValueError("the message has no From address and no default was given")
    visible = [sender, *req.to, *req.cc, *req.reply_to]
    policy = POLICY if all(a.ascii_email is not None for a in visible) else POLICY_UTF8
    fields: list[tuple[str, object]] = [("From", _mailbox(sender))]
    if req.to:
        fields.append(("To", [_mailbox(a) for a in req.to]))
    elif not req.cc:  # as Postfix does: say the recipients are hidden rather than omit To
        fields.append(("To", Group("undisclosed-recipients")))
    if req.cc:
        fields.append(("Cc", [_mailbox(a) for a in req.cc]))
    if req.reply_to:
        fields.append(("Reply-To", [_mailbox(a) for a in req.reply_to]))
    fields.append(("Subject", req.subject))
    fields.append(("Date", date if date.tzinfo is not None else date.replace(tzinfo=UTC)))
    head = [_fold(name, value, policy) for name, value in fields]
    head.append(_fold_text("MIME-Version", "1.0", policy))
    head.extend(_fold_text(name, value, policy) for name, value in req.headers.items())
    return b"".join(head) + _serialise(_body(req))


def with_headers(content: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
    """``headers`` folded (RFC 2047 for non-ASCII) and put in front of ``content``.

    ``content`` (a whole message: headers, blank line, body) is not parsed or changed;
    the new lines use its line ending (CRLF, or LF when its first line ends in LF).
    Raises ValueError for an invalid header name or a value with CR, LF or NUL.
    """
    first_break = content.find(b"\n")
    bare_lf = first_break >= 0 and not content[:first_break].endswith(b"\r")
    policy = _LF_POLICY if bare_lf else POLICY
    lines = []
    for name, value in headers:
        if not HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"the {name} header value contains CR, LF or NUL")
        lines.append(_fold_text(name, value, policy))
    return b"".join(lines) + content


def _fold(name: str, value: object, policy: EmailPolicy[EmailMessage]) -> bytes:
    """A header Postroute writes (addresses, Subject, Date), through the email package."""
    header: BaseHeader = policy.header_factory(name, value)
    return header.fold(policy=policy).encode("utf-8")


def _fold_text(name: str, value: str, policy: EmailPolicy[EmailMessage]) -> bytes:
    """A header given as text: verbatim when ASCII and short enough, else RFC 2047 words.

    Verbatim because the email package folds a long token (a List-Unsubscribe URL, say)
    into encoded-words, which breaks it; a line of up to 998 octets is valid as it is.
    """
    if value.isascii() and len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}{policy.linesep}".encode("ascii")
    return _AS_TEXT(name, value).fold(policy=policy).encode("utf-8")


def _mailbox(address: Address) -> Mailbox:
    # IDNA (xn--) domain where the local part allows an ASCII form; else the UTF-8 one.
    local, _, domain = (address.ascii_email or address.email).rpartition("@")
    return Mailbox(display_name=address.name or "", username=local, domain=domain)


def _body(req: SendRequest) -> MIMEPart:
    text = _text_part(req.text, "plain") if req.text and req.text.strip() else None
    html = _text_part(req.html, "html") if req.html and req.html.strip() else None
    files = req.attachments
    if html is not None and req.inline_attachments:
        images = [_file_part(a) for a in req.inline_attachments]
        html = _multipart("related", [html, *images], 'type="text/html"')
        files = req.body_attachments
    # Without an html part, inline images travel as (inline) attachments.
    parts = [part for part in (text, html) if part is not None]
    body = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
    if files:
        body = _multipart("mixed", [body, *(_file_part(a) for a in files)])
    return body


def _text_part(content: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    part.set_content(content, subtype=subtype, charset="utf-8")
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


def _multipart(subtype: str, parts: Sequence[MIMEPart], params: str = "") -> MIMEPart:
    container = MIMEPart(policy=POLICY)
    container["Content-Type"] = f"multipart/{subtype}" + (f"; {params}" if params else "")
    for part in parts:
        container.attach(part)
    return container


def _serialise(part: MIMEPart) -> bytes:
    return part.as_bytes(policy=POLICY)
