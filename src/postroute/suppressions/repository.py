"""All SQL of the suppression list."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db import column_bind, fetch_all
from postroute.db.changes import Changes
from postroute.db.ordering import binary
from postroute.models import Suppression
from postroute.models.base import table_of

_TABLE = table_of(Suppression)
_CHUNK = 5_000  # addresses per IN list


async def active_for(
    session: AsyncSession, account_id: str, emails: Iterable[str], now: datetime
) -> dict[str, str]:
    """The addresses of ``emails`` the account suppresses now, with their reason."""
    found: dict[str, str] = {}
    for _, size, params in _chunks(account_id, emails, now):
        rows = await fetch_all(session, _read(size, reason=True), params)
        found.update((e, r) for e, r in rows)
    return found


async def entries_for(
    session: AsyncSession, account_id: str, emails: Iterable[str], since: datetime
) -> dict[str, tuple[str, datetime | None]]:
    """The entries of ``emails`` active at ``since``, with their reason and expiry (to
    tell which are active at several later times with one read)."""
    found: dict[str, tuple[str, datetime | None]] = {}
    wanted = sorted(set(emails))
    for start in range(0, len(wanted), _CHUNK):
        stmt = sa.select(Suppression.email, Suppression.reason, Suppression.expires_at).where(
            Suppression.account_id == account_id,
            Suppression.email.in_(wanted[start : start + _CHUNK]),
            sa.or_(Suppression.expires_at.is_(None), Suppression.expires_at > since),
        )
        found.update((e, (r, x)) for e, r, x in (await session.execute(stmt)).all())
    return found


async def active_pairs(
    session: AsyncSession, pairs: Iterable[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], str]:
    """Of (account, address) pairs, those suppressed now, with their reason."""
    by_account: dict[str, set[str]] = {}
    for account_id, email in pairs:
        by_account.setdefault(account_id, set()).add(email)
    found: dict[tuple[str, str], str] = {}
    for account_id, emails in by_account.items():
        for email, reason in (await active_for(session, account_id, emails, now)).items():
            found[(account_id, email)] = reason
    return found


def guard_recipients(
    changes: Changes,
    account_id: str,
    emails: Iterable[str],
    suppressed: Iterable[str],
    now: datetime,
) -> None:
    """``changes`` is written only while exactly ``suppressed`` of ``emails`` (keys) are
    suppressed at ``now``: a plan made without reading the list (or before an entry was
    added) is planned again."""
    known = set(suppressed)
    for part, size, params in _chunks(account_id, emails, now):
        rows = [(e,) for e in part if e in known]
        changes.guard(_read(size, reason=False), rows, params)


def _chunks(
    account_id: str, emails: Iterable[str], now: datetime
) -> Iterator[tuple[list[str], int, dict[str, Any]]]:
    """``emails`` sorted, in parts of at most ``_CHUNK``, each with the size of its
    :func:`_read` (a power of two) and its parameters: the part padded with "" (no entry
    has it)."""
    wanted = sorted(set(emails))
    for start in range(0, len(wanted), _CHUNK):
        part = wanted[start : start + _CHUNK]
        size = 1 << (len(part) - 1).bit_length()
        params: dict[str, Any] = {"account_id": account_id, "now": now}
        params.update((f"e{i}", e) for i, e in enumerate(part + [""] * (size - len(part))))
        yield part, size, params


@lru_cache(maxsize=32)
def _read(size: int, *, reason: bool) -> sa.Select[*tuple[Any, ...]]:
    """The active entries among ``size`` addresses (binds ``e0``...), their addresses (and
    reasons), in a stable order: one statement per size, so that it is compiled once (an
    SMTP message is one submission, and every claim of the worker reads the list: a
    compile each time cost a third of the SMTP process's time)."""
    emails = [column_bind(_TABLE, "email", f"e{i}") for i in range(size)]
    columns = (Suppression.email, Suppression.reason) if reason else (Suppression.email,)
    return (
        sa.select(*columns)
        .where(
            Suppression.account_id == column_bind(_TABLE, "account_id"),
            Suppression.email.in_(emails),
            sa.or_(
                Suppression.expires_at.is_(None),
                Suppression.expires_at > column_bind(_TABLE, "expires_at", "now"),
            ),
        )
        .order_by(binary(Suppression.email))
    )


def _bind(name: str) -> sa.BindParameter[Any]:
    return column_bind(_TABLE, name)


# The same text on SQLite (3.24+) and PostgreSQL. An entry is replaced only by one that
# lasts longer (no expiry beats any expiry; an expired one is replaced).
_UPSERT = sa.text(
    "INSERT INTO suppressions (id, account_id, email, reason, source, created_at, expires_at) "
    "VALUES (:id, :account_id, :email, :reason, :source, :created_at, :expires_at) "
    "ON CONFLICT (account_id, email) DO UPDATE SET reason = excluded.reason, "
    "source = excluded.source, created_at = excluded.created_at, "
    "expires_at = excluded.expires_at "
    "WHERE suppressions.expires_at IS NOT NULL AND (excluded.expires_at IS NULL "
    "OR suppressions.expires_at < excluded.expires_at)"
).bindparams(
    *(
        _bind(c)
        for c in ("id", "account_id", "email", "reason", "source", "created_at", "expires_at")
    )
)


def upsert(changes: Changes, rows: Sequence[dict[str, Any]]) -> None:
    """Add entries (rows of every column); an address listed already keeps the entry
    that lasts longer."""
    changes.execute(_UPSERT, list(rows))


async def list_page(
    session: AsyncSession,
    account_id: str,
    *,
    reason: str | None,
    email: str | None,
    before_id: str | None,
    limit: int,
) -> Sequence[Suppression]:
    """Newest first; ``email``: part of the address (any case)."""
    stmt = sa.select(Suppression).where(Suppression.account_id == account_id)
    if reason:
        stmt = stmt.where(Suppression.reason == reason)
    if email:
        stmt = stmt.where(Suppression.email.icontains(email, autoescape=True))
    if before_id:
        stmt = stmt.where(Suppression.id < before_id)
    return (await session.scalars(stmt.order_by(Suppression.id.desc()).limit(limit))).all()


async def get(session: AsyncSession, account_id: str, email: str) -> Suppression | None:
    stmt = sa.select(Suppression).where(
        Suppression.account_id == account_id, Suppression.email == email
    )
    return await session.scalar(stmt)
