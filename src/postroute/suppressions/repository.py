"""All SQL of the suppression list."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db import column_bind, fetch_all
from postroute.db.changes import Changes
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
    emails = sorted({e for _, e in wanted})
    found: dict[tuple[str, str], str] = {}
    for start in range(0, len(emails), _CHUNK):
        stmt = sa.select(Suppression.account_id, Suppression.email, Suppression.reason).where(
            Suppression.email.in_(emails[start : start + _CHUNK]), _active(now)
        )
        for account_id, email, reason in (await session.execute(stmt)).all():
            if (account_id, email) in wanted:
                found[(account_id, email)] = reason
    return found


# The stamp of an account's list for the submit path: equal stamps mean no entry was
# added (ids grow) or removed since the list was read.
_STAMP = sa.select(sa.func.count(Suppression.id), sa.func.max(Suppression.id)).where(
    Suppression.account_id == sa.bindparam("account_id")
)


async def stamp(session: AsyncSession, account_id: str) -> tuple[Any, ...]:
    return tuple(await fetch_all(session, _STAMP, {"account_id": account_id}))


def guard(changes: Changes, account_id: str, found: tuple[Any, ...]) -> None:
    changes.guard(_STAMP, list(found), {"account_id": account_id})


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
    """Newest first; ``email``: the address, or its start."""
    stmt = sa.select(Suppression).where(Suppression.account_id == account_id)
    if reason:
        stmt = stmt.where(Suppression.reason == reason)
    if email:
        stmt = stmt.where(Suppression.email.startswith(email, autoescape=True))
    if before_id:
        stmt = stmt.where(Suppression.id < before_id)
    return (await session.scalars(stmt.order_by(Suppression.id.desc()).limit(limit))).all()


async def get(session: AsyncSession, account_id: str, email: str) -> Suppression | None:
    stmt = sa.select(Suppression).where(
        Suppression.account_id == account_id, Suppression.email == email
    )
    return await session.scalar(stmt)
