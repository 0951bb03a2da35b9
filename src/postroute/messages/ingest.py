"""Mail submitted over SMTP made into a draft of the submit path: read its headers,
apply the ``X-Postroute-*`` controls, check fields as the HTTP API does.

The message is kept as the client sent it. Only whole header fields are removed
(the controls, ``Message-ID`` and ``Bcc``), ``X-List-Unsubscribe`` is renamed in place,
and a missing ``Date`` (or, from the pool's ``from_email``, ``From``) is added in front;
every other header byte and the body stay as they are (no re-encoding). Only the header
block is parsed, and only the fields Postroute needs are decoded.

:func:`parse` is pure CPU work on bytes (the SMTP handler may run it in a thread);
:func:`draft` adds the envelope's recipients and hands it to the submit path
(:mod:`postroute.messages.submit`), the same as HTTP sends.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime

from pydantic_core import PydanticCustomError

from postroute import errors
from postroute.kit import text as t
from postroute.messages import header_block
from postroute.messages import validation as v
from postroute.messages.planning import Draft, Fields, Problem, Recipient
from postroute.preparation.headers import with_headers

SOURCE = "smtp"
TAGS = "x-postroute-tags"
POOL = "x-postroute-pool"
METADATA = "x-postroute-metadata-"
# Switches, true or false; left out: the account's default.
SWITCHES = {
    "x-postroute-track-opens": "opens",
    "x-postroute-track-clicks": "clicks",
    "x-postroute-unsubscribe": "unsubscribe",
}
# Headers Postroute writes per recipient when relaying: a client's copy is dropped.
WRITTEN_BY_POSTROUTE = frozenset(
    {"message-id", "x-postroute-message-id", "x-postroute-account-id", "x-postroute-pool-id"}
)
DROPPED = WRITTEN_BY_POSTROUTE | {"bcc"}  # Bcc: recipients come from RCPT TO only
RENAMED = {"x-list-unsubscribe": b"List-Unsubscribe"}
KNOWN = "known: X-Postroute-Tags, -Pool, -Metadata-<key>, -Track-Opens, -Track-Clicks, -Unsubscribe"

FROM, SUBJECT, BODY, RCPT = "From", "Subject", "body", "RCPT TO"
_ORDER = (FROM, SUBJECT, BODY, RCPT, "X-Postroute-Tags", "X-Postroute-Metadata", "X-Postroute-Pool")
_NOT_SPACE = re.compile(rb"\S")
_READ = frozenset({"from", "subject", "to", "cc", "date", "list-unsubscribe"})


@dataclass
class Parsed:
    """What :func:`parse` read from a raw message; ``problems`` found so far."""

    content: bytes
    sender: str | None = None
    subject: str = ""
    visible: dict[str, str] = field(default_factory=dict)  # casefolded To/Cc -> kind
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    pool_ref: str | None = None
    switches: dict[str, bool] = field(default_factory=dict)  # "opens", "clicks", "unsubscribe"
    problems: list[Problem] = field(default_factory=list)

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))


def parse(raw: bytes, now: datetime) -> Parsed:
    """Read headers and controls from ``raw``; build the content to store."""
    fields, rest = header_block.split(raw)
    kept: list[bytes] = []
    found: dict[str, list[str]] = {}
    parsed = Parsed(content=raw)
    changed = False
    for header in fields:
        name = header_block.name(header)
        lower = name.lower()
        if lower in DROPPED or lower.startswith("x-postroute-"):
            if lower not in DROPPED:
                _control(parsed, name, header_block.text(header_block.value(header)))
            changed = True
            continue
        if lower in RENAMED:
            header = RENAMED[lower] + header[len(name) :]  # the name is ASCII here
            lower, changed = RENAMED[lower].decode().lower(), True
        if lower in _READ:
            found.setdefault(lower, []).append(header_block.value(header))
        kept.append(header)
    if changed:
        parsed.content = b"".join(kept) + rest
    if "date" not in found:
        parsed.content = with_headers(parsed.content, [("Date", format_datetime(now))])
    if _NOT_SPACE.search(rest) is None:
        parsed.problem(BODY, "the message has no body")
    _read_from(parsed, found.get("from", []))
    _read_subject(parsed, found.get("subject", []))
    if len(found.get("list-unsubscribe", [])) > 1:
        message = "more than one List-Unsubscribe (or X-List-Unsubscribe) header"
        parsed.problem("List-Unsubscribe", message)
    for kind in ("to", "cc"):
        for value in found.get(kind, []):
            for address in header_block.addresses(value):
                parsed.visible.setdefault(address.casefold(), kind)
    return parsed


def _read_from(parsed: Parsed, values: list[str]) -> None:
    if not values:
        return  # submit() may use the pool's from_email
    addresses = [a for value in values for a in header_block.addresses(value)]
    if len(values) > 1 or not addresses:
        problem = "more than one From header" if len(values) > 1 else "no address in From"
        parsed.problem(FROM, problem)
        return
    normalised, error = _check_address(addresses[0])
    if normalised is None:
        parsed.problem(FROM, f"From header: {error}")
    parsed.sender = normalised


def _read_subject(parsed: Parsed, values: list[str]) -> None:
    if not values or not values[0].strip():
        parsed.problem(SUBJECT, "missing Subject header" if not values else "empty Subject")
        return
    if len(values) > 1:
        parsed.problem(SUBJECT, "more than one Subject header")
    try:
        parsed.subject = v.subject(header_block.text(values[0]))
    except PydanticCustomError as exc:
        parsed.problem(SUBJECT, f"Subject header: {exc.message()}")


def _control(parsed: Parsed, name: str, value: str) -> None:
    """One ``X-Postroute-*`` header: applied to ``parsed``, or a problem."""
    lower = name.lower()
    try:
        if lower == TAGS:
            parsed.tags.extend(v.tag(t) for t in value.split(",") if t.strip())
        elif lower == POOL:
            if parsed.pool_ref is not None:
                raise _Twice(name)
            parsed.pool_ref = v.pool_ref(value)
        elif lower.startswith(METADATA) and len(lower) > len(METADATA):
            key = v.metadata_key(name[len(METADATA) :])
            if key in parsed.metadata:
                raise _Twice(name)
            parsed.metadata[key] = v.metadata_value(value)
        elif lower in SWITCHES:
            if SWITCHES[lower] in parsed.switches:
                raise _Twice(name)
            if value.strip().lower() not in ("true", "false"):
                parsed.problem(name, f"{name} must be true or false, not {value!r}")
                return
            parsed.switches[SWITCHES[lower]] = value.strip().lower() == "true"
        elif lower not in WRITTEN_BY_POSTROUTE:
            parsed.problem(name, f"unknown header {name} ({KNOWN})")
    except PydanticCustomError as exc:
        parsed.problem(name, f"{name}: {exc.message()}")
    except _Twice:
        parsed.problem(name, f"{name} is given more than once")


class _Twice(Exception):
    pass


@functools.lru_cache(maxsize=8192)
def _check_address(address: str) -> tuple[str | None, str]:
    """(normalised address, "") or (None, reason): the HTTP API's rules, cached."""
    try:
        return t.email_address(address), ""
    except PydanticCustomError as exc:
        return None, exc.message()


def recipient(address: str) -> str:
    """A RCPT TO (or MAIL FROM) address, normalised; ``errors.ValidationFailed`` with
    the reason."""
    normalised, error = _check_address(address)
    if normalised is None:
        raise errors.ValidationFailed(error)
    return normalised


def draft(
    parsed: Parsed,
    rcpt_tos: Sequence[str],
    *,
    max_recipients: int,
    mail_from: str | None = None,
) -> Draft:
    """The submit path's draft of one SMTP transaction: its envelope (``mail_from``: the
    client's bounce address, kept as the envelope sender of an unsigned message; ``""``
    for the null sender), the controls read from its headers and every problem found so
    far."""
    problems = list(parsed.problems)
    recipients = _recipients(parsed, rcpt_tos, problems)
    if len(recipients) > max_recipients:
        count = len(recipients)
        problems.append(Problem(RCPT, f"at most {max_recipients} recipients, got {count}"))
    _check_whole(parsed, problems)
    content = parsed.content

    def complete(default_from: str | None, now: datetime) -> bytes:
        """The message as stored: with the pool's From when it has none."""
        return with_headers(content, [("From", default_from)]) if default_from else content

    return Draft(
        source=SOURCE,
        sender=parsed.sender,
        recipients=recipients,
        subject=parsed.subject,
        tags=parsed.tags,
        metadata=parsed.metadata,
        pool_ref=parsed.pool_ref,
        track_opens=parsed.switches.get("opens"),  # None: the account's default
        track_clicks=parsed.switches.get("clicks"),
        unsubscribe=parsed.switches.get("unsubscribe"),
        content=complete,
        problems=problems,
        fields=FIELDS,
        mail_from=mail_from,
    )


FIELDS = Fields(
    pool="X-Postroute-Pool",
    pool_named=True,
    sender=FROM,
    no_sender="missing From header (and the pool has no from_email)",
    sender_without_pool=True,
    order=_ORDER,
    refuse_all_suppressed=True,  # 550 5.7.1 when no recipient may be mailed
)


def _recipients(
    parsed: Parsed, rcpt_tos: Sequence[str], problems: list[Problem]
) -> list[Recipient]:
    """Envelope recipients once each (first wins); To/Cc from the headers, else Bcc."""
    seen: set[str] = set()
    found: list[Recipient] = []
    for address in rcpt_tos:
        normalised, error = _check_address(address)
        if normalised is None:
            problems.append(Problem(RCPT, f"RCPT TO <{address}>: {error}"))
            continue
        key = normalised.casefold()
        if key not in seen:
            seen.add(key)
            found.append(Recipient(parsed.visible.get(key, "bcc"), normalised))
    return found


def _check_whole(parsed: Parsed, problems: list[Problem]) -> None:
    if len(parsed.tags) > v.MAX_TAGS:
        message = f"at most {v.MAX_TAGS} tags in X-Postroute-Tags, got {len(parsed.tags)}"
        problems.append(Problem("X-Postroute-Tags", message))
    size = sum(len(f"{k}{val}".encode(errors="replace")) for k, val in parsed.metadata.items())
    if size > v.MAX_METADATA_BYTES:
        message = f"X-Postroute-Metadata-* must be at most {v.MAX_METADATA_BYTES} bytes in all"
        problems.append(Problem("X-Postroute-Metadata", f"{message}, got {size}"))
