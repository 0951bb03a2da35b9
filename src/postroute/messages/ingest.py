"""Mail submitted over SMTP: read its headers, apply the ``X-Postroute-*`` controls,
validate as the HTTP API does, and store it with :func:`service.store_prepared`.

The message is kept as the client sent it. Only whole header fields are removed
(the controls, ``Message-ID`` and ``Bcc``), ``X-List-Unsubscribe`` is renamed in place,
and a missing ``Date`` (or, from the pool's ``from_email``, ``From``) is added in front;
every other header byte and the body stay as they are (no re-encoding). Only the header
block is parsed, and only the fields Postroute needs are decoded.

:func:`parse` is pure CPU work on bytes (the SMTP handler may run it in a thread);
:func:`plan` validates and builds rows against the account's pools as read earlier
(:func:`read_pools`, kept by the caller), outside any transaction; :func:`store` stores
several planned SMTP transactions in the caller's transaction, after checking that
those pools still hold.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from pydantic_core import PydanticCustomError
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.messages import header_block
from postroute.messages import repository as messages_repo
from postroute.messages import validation as v
from postroute.messages.compose import with_headers
from postroute.messages.schemas import SendResponse
from postroute.messages.service import (
    Prepared,
    Recipient,
    Submission,
    combine,
    prepare,
    resolve_pool,
    route_note,
    store_prepared,
)
from postroute.models import SmtpPool
from postroute.pools import repository as pools_repo
from postroute.sqlite_unit import Unit

SOURCE = "smtp"
TAGS = "x-postroute-tags"
POOL = "x-postroute-pool"
METADATA = "x-postroute-metadata-"
TRACK = {"x-postroute-track-opens": "opens", "x-postroute-track-clicks": "clicks"}
# Headers Postroute writes per recipient when relaying: a client's copy is dropped.
WRITTEN_BY_POSTROUTE = frozenset(
    {"message-id", "x-postroute-message-id", "x-postroute-account-id", "x-postroute-pool-id"}
)
DROPPED = WRITTEN_BY_POSTROUTE | {"bcc"}  # Bcc: recipients come from RCPT TO only
RENAMED = {"x-list-unsubscribe": b"List-Unsubscribe"}
KNOWN = "known: X-Postroute-Tags, -Pool, -Metadata-<key>, -Track-Opens, -Track-Clicks"

FROM, SUBJECT, BODY, RCPT = "From", "Subject", "body", "RCPT TO"
_ORDER = (FROM, SUBJECT, BODY, RCPT, "X-Postroute-Tags", "X-Postroute-Metadata", "X-Postroute-Pool")
_NOT_SPACE = re.compile(rb"\S")
_READ = frozenset({"from", "subject", "to", "cc", "date", "list-unsubscribe"})


@dataclass(frozen=True)
class Problem:
    field: str
    message: str


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
    track: dict[str, bool] = field(default_factory=dict)  # "opens" / "clicks"
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
            parsed.metadata[key] = value
        elif lower in TRACK:
            if TRACK[lower] in parsed.track:
                raise _Twice(name)
            if value.lower() not in ("true", "false"):
                parsed.problem(name, f"{name} must be true or false, not {value!r}")
                return
            parsed.track[TRACK[lower]] = value.lower() == "true"
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
        return v.email_address(address), ""
    except PydanticCustomError as exc:
        return None, exc.message()


def recipient(address: str) -> str:
    """A RCPT TO address, normalised; ``errors.ValidationFailed`` with the reason."""
    normalised, error = _check_address(address)
    if normalised is None:
        raise errors.ValidationFailed(error)
    return normalised


@dataclass(frozen=True)
class Request:
    """One SMTP transaction to store: the sending account, the parsed DATA, RCPT TOs."""

    account_id: str
    parsed: Parsed
    rcpt_tos: Sequence[str]


@dataclass(frozen=True)
class Pools:
    """One account's pools as read at one time, with their stamp
    (:func:`pools_repo.pools_stamp`): a request is planned against them outside any
    write transaction, and the stamp tells at commit time whether they still hold."""

    account_id: str
    pools: list[SmtpPool]
    stamp: tuple[Any, ...]


async def read_pools(session: AsyncSession, account_id: str) -> Pools:
    # The stamp first: if a pool changes in between, the pools are newer than their
    # stamp, and the check at commit time re-validates (never the other way round).
    stamp = await pools_repo.pools_stamp(session, account_id)
    return Pools(account_id, list(await pools_repo.list_pools(session, account_id)), stamp)


@dataclass(frozen=True)
class Planned:
    """A request validated against ``stamp``'s pools and made into rows and a reply."""

    request: Request
    now: datetime
    stamp: tuple[Any, ...]
    prepared: Prepared
    inserts: Unit | None = None  # its rows as the SQLite writer's statements


def plan(
    request: Request,
    pools: Pools,
    now: datetime,
    *,
    max_recipients: int,
    dialect: Dialect | None = None,
) -> Planned:
    """Validate ``request`` (pool, recipients, From default) and build its rows: no
    database work, so that it is done before SQLite's write lock is taken. With a SQLite
    ``dialect``, also its inserts for the writer (:func:`unit_of`). A refused request
    raises a DomainError with every problem in its place."""
    submission = _submission(request, pools.pools, max_recipients)
    prepared = prepare([(request.account_id, submission)], now)
    planned = Planned(request, now, pools.stamp, prepared)
    return planned if dialect is None else _with_inserts(planned, dialect)


async def store(
    session: AsyncSession, planned: Sequence[Planned], *, max_recipients: int
) -> tuple[list[SendResponse | errors.DomainError], dict[str, Pools]]:
    """Store planned requests in the caller's transaction, together in bulk statements.

    Each was planned against pools read earlier. Where an account's pools have changed
    since (another stamp), its requests are planned again against the pools read now, in
    this transaction, and may be refused (a DomainError in their place; nothing written).
    Returns the results in order and the pools read here, per account."""
    stamps: dict[str, tuple[Any, ...]] = {}
    fresh: dict[str, Pools] = {}
    results: list[SendResponse | errors.DomainError] = []
    parts: list[Prepared] = []
    for item in planned:
        account = item.request.account_id
        if account not in stamps:
            stamps[account] = await pools_repo.pools_stamp(session, account)
        if item.stamp != stamps[account]:
            if account not in fresh:
                fresh[account] = await read_pools(session, account)
            try:
                item = plan(item.request, fresh[account], item.now, max_recipients=max_recipients)
            except errors.DomainError as exc:
                results.append(exc)
                continue
        parts.append(item.prepared)
        results.append(item.prepared.replies[0])
    if parts:
        await store_prepared(session, combine(parts))
    return results, fresh


def unit_of(planned: Sequence[Planned], dialect: Dialect) -> tuple[Unit, list[SendResponse]]:
    """:func:`store`'s transaction for a SQLite writer, in one hand-off, with the replies.
    It is written only while every account's pools are still those the requests were
    planned with (else nothing is written, and :func:`store` does it)."""
    guards = Unit(dialect)
    for account_id, stamp in dict.fromkeys((p.request.account_id, p.stamp) for p in planned):
        pools_repo.guard_stamp(guards, account_id, stamp)
    parts = [guards]
    for item in planned:
        assert item.inserts is not None, "planned with the writer's dialect"
        parts.append(item.inserts)
    return Unit.merged(dialect, parts), [p.prepared.replies[0] for p in planned]


def _with_inserts(item: Planned, dialect: Dialect) -> Planned:
    inserts = Unit(dialect)
    messages_repo.add_submission(inserts, item.prepared.rows)
    return dataclasses.replace(item, inserts=inserts)


def _submission(request: Request, pools: list[SmtpPool], max_recipients: int) -> Submission:
    parsed = request.parsed
    problems = list(parsed.problems)
    recipients = _recipients(parsed, request.rcpt_tos, problems)
    if len(recipients) > max_recipients:
        count = len(recipients)
        problems.append(Problem(RCPT, f"at most {max_recipients} recipients, got {count}"))
    _check_whole(parsed, problems)
    code = errors.VALIDATION_FAILED
    pool: SmtpPool | None = None
    try:
        pool = resolve_pool(pools, parsed.pool_ref, "X-Postroute-Pool")
    except errors.DomainError as exc:
        code, message = exc.code, exc.message
        if parsed.pool_ref is not None and exc.details:
            message = f"X-Postroute-Pool: {exc.details[0]['message']}"
        problems.append(Problem("X-Postroute-Pool", message))
    content, sender = parsed.content, parsed.sender
    if sender is None and not any(p.field == FROM for p in problems):
        if pool is not None and pool.from_email:
            sender = pool.from_email
            content = with_headers(content, [("From", sender)])
        else:
            problems.append(Problem(FROM, "missing From header (and the pool has no from_email)"))
    if problems or pool is None or sender is None:
        problems.sort(key=lambda p: _ORDER.index(p.field) if p.field in _ORDER else len(_ORDER))
        raise errors.DomainError(
            "; ".join(p.message for p in problems),
            code=code if len(problems) == 1 else errors.VALIDATION_FAILED,
            details=[{"field": p.field, "message": p.message} for p in problems],
        )
    return Submission(
        content=content,
        sender=sender,
        recipients=recipients,
        subject=parsed.subject,
        tags=parsed.tags,
        metadata=parsed.metadata,
        pool=pool,
        requested_pool=parsed.pool_ref,
        track_opens=parsed.track.get("opens", False),
        track_clicks=parsed.track.get("clicks", False),
        source=SOURCE,
        route_note=route_note(pool, parsed.pool_ref),
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
