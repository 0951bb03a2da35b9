"""What an ingress hands the submit path: :class:`Draft` values, their recipients, the
problems found while reading them, and how the ingress names its fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from postroute import errors


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    code: str = errors.VALIDATION_FAILED


@dataclass(frozen=True)
class Recipient:
    kind: str  # to | cc | bcc
    email: str


@dataclass(frozen=True)
class Fields:
    """How an ingress names the fields the submit path checks, and orders problems."""

    pool: str = "pool"
    pool_named: bool = False  # a problem of a named pool starts with the field's name
    sender: str = "from"
    no_sender: str = "required: the pool has no from_email"
    # whether a missing From is reported when no pool could be resolved (SMTP says it
    # with the rest; HTTP waits: the default From depends on the pool)
    sender_without_pool: bool = False
    order: tuple[str, ...] = ()  # problems of these fields first, in this order
    # a message none of whose recipients may be mailed is refused (SMTP: 550), rather
    # than recorded dropped for each (HTTP)
    refuse_all_suppressed: bool = False


@dataclass
class Draft:
    """One message as an ingress hands it in: its fields checked one by one."""

    source: str  # "api" | "smtp"
    sender: str | None  # the From address, when the message has one
    recipients: list[Recipient]
    subject: str
    tags: Sequence[str]
    metadata: dict[str, str]
    pool_ref: str | None
    track_opens: bool | None  # None: the account's default
    track_clicks: bool | None
    # the content, given the From address to use when the message has none, and the time
    content: Callable[[str | None, datetime], bytes]
    problems: list[Problem] = field(default_factory=list)
    fields: Fields = Fields()
    mail_from: str | None = None  # the envelope sender an SMTP client gave
    unsubscribe: bool | None = None  # List-Unsubscribe headers; None: the account's default
