"""All SQL of the suppression list."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db import column_bind
from postroute.db.changes import Changes
from postroute.db.ordering import binary
from postroute.models import Suppression
from postroute.models.base import table_of

_TABLE = table_of(Suppression)
_CHUNK = 5_000  # addresses per IN list


def _active(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(Suppression.expires_at.is_(None), Suppression.expires_at > now)


async def active_for(
    session: AsyncSession, account_id: str, emails: Iterable[str], now: datetime
) -> dict[str, str]:
    """The addresses of ``emails`` the account suppresses now, with their reason."""
    found: dict[str, str] = {}
    wanted = sorted(set(emails))
    for start in range(0, len(wanted), _CHUNK):
        stmt = sa.select(Suppression.email, Suppression.reason).where(
            Suppression.account_id == account_id,
            Suppression.email.in_(wanted[start : start + _CHUNK]),
            _active(now),
        )
        found.update((e, r) for e, r in (await session.execute(stmt)).all())
    return found


async def active_pairs(
    session: AsyncSession, pairs: Iterable[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], str]:
    """Of (account, address) pairs, those suppressed now, with their reason."""
    wanted = set(pairs)
    accounts = sorted({a for a, _ in wanted})
    emails = sorted({e for _, e in wanted})
    found: dict[tuple[str, str], str] = {}
    for start in range(0, len(emails), _CHUNK):
        stmt = sa.select(Suppression.account_id, Suppression.email, Suppression.reason).where(
            Suppression.account_id.in_(accounts),
            Suppression.email.in_(emails[start : start + _CHUNK]),
            _active(now),
        )
        for account_id, email, reason in (await session.execute(stmt)).all():
            if (account_id, email) in wanted:
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
    wanted = sorted(set(emails))
    known = set(suppressed)
    for start in range(0, len(wanted), _CHUNK):
        part = wanted[start : start + _CHUNK]
        size = 1 << (len(part) - 1).bit_length()  # a statement per power of two: compiled once
        params: dict[str, Any] = {"account_id": account_id, "now": now}
        params.update((f"e{i}", e) for i, e in enumerate(part + [""] * (size - len(part))))
        changes.guard(_guard_read(size), [(e,) for e in part if e in known], params)


@lru_cache(maxsize=16)
def _guard_read(size: int) -> sa.Select[str]:
    """The active entries among ``size`` addresses (binds ``e0``...; an unused one is "",
    which no entry has), in a stable order: one statement per size, so that the SQLite
    path compiles it once (an SMTP message is one submission: a compile per message
    cost a third of the SMTP process's time)."""
    emails = [column_bind(_TABLE, "email", f"e{i}") for i in range(size)]
    return (
        sa.select(Suppression.email)
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
