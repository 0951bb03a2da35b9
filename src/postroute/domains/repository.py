"""All SQL for sending domains, their DKIM keys and their records."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db import fetch_all
from postroute.db.changes import Changes
from postroute.models import Domain, DomainKey, DomainRecord, SmtpPool
from postroute.models.accounts import Account
from postroute.models.domains import VERIFIED


async def list_domains(session: AsyncSession, account_id: str) -> Sequence[Domain]:
    stmt = sa.select(Domain).where(Domain.account_id == account_id).order_by(Domain.name)
    return (await session.scalars(stmt)).all()


async def get_domain(session: AsyncSession, account_id: str, ref: str) -> Domain | None:
    """By id, or by name (ASCII form)."""
    stmt = sa.select(Domain).where(
        Domain.account_id == account_id, sa.or_(Domain.id == ref, Domain.name == ref)
    )
    return await session.scalar(stmt)


async def verified_elsewhere(session: AsyncSession, account_id: str, name: str) -> bool:
    stmt = sa.select(Domain.id).where(
        Domain.name == name, Domain.account_id != account_id, Domain.status == VERIFIED
    )
    return await session.scalar(stmt.limit(1)) is not None


async def keys_of(session: AsyncSession, domain_ids: Iterable[str]) -> Sequence[DomainKey]:
    ids = list(domain_ids)
    if not ids:
        return []
    stmt = sa.select(DomainKey).where(DomainKey.domain_id.in_(ids)).order_by(DomainKey.created_at)
    return (await session.scalars(stmt)).all()


async def records_of(session: AsyncSession, domain_ids: Iterable[str]) -> Sequence[DomainRecord]:
    ids = list(domain_ids)
    if not ids:
        return []
    stmt = sa.select(DomainRecord).where(DomainRecord.domain_id.in_(ids)).order_by(DomainRecord.id)
    return (await session.scalars(stmt)).all()


async def relay_hosts(session: AsyncSession, account_id: str) -> list[str]:
    """The hosts of the account's pools (their SPF includes go in the records)."""
    stmt = sa.select(SmtpPool.host).where(SmtpPool.account_id == account_id)
    return sorted(set((await session.scalars(stmt)).all()))


async def replace_records(session: AsyncSession, domain_id: str, rows: list[DomainRecord]) -> None:
    await session.execute(sa.delete(DomainRecord).where(DomainRecord.domain_id == domain_id))
    session.add_all(rows)


async def claim_due(session: AsyncSession, now: datetime, until: datetime, limit: int) -> list[str]:
    """Domains due for their recheck, taken for it (their next check moved to ``until``,
    so that another worker does not check them at the same time)."""
    due = (
        sa.select(Domain.id)
        .where(Domain.next_check_at <= now)
        .order_by(Domain.next_check_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        sa.update(Domain)
        .where(Domain.id.in_(due.scalar_subquery()))
        .values(next_check_at=until)
        .returning(Domain.id)
        .execution_options(synchronize_session=False)
    )
    return list((await session.scalars(stmt)).all())


async def account_flags(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


# What the submit path reads of an account's domains, and their stamp: equal stamps mean
# the domains read earlier still hold (as the pools' stamp does for pools).
_STAMP = (
    sa.select(Domain.id, Domain.name, Domain.status, Domain.updated_at)
    .where(Domain.account_id == sa.bindparam("account_id"))
    .order_by(Domain.id)
)
# and the account's settings the submit path applies
_REQUIRE = sa.select(
    Account.require_verified_domain,
    Account.track_opens,
    Account.track_clicks,
    Account.unsubscribe_header,
).where(Account.id == sa.bindparam("account_id"))


# What a worker's signing book is made of (every column it reads but the key material,
# which a key id does not change): equal stamps mean the book still holds.
_SIGNING = (
    sa.select(
        Domain.id,
        Domain.name,
        Domain.status,
        Domain.return_path_sub,
        Domain.return_path_verified,
        Domain.tracking_sub,
        Domain.tracking_verified,
        DomainKey.id,
        DomainKey.selector,
        DomainKey.state,
    )
    .outerjoin(DomainKey, DomainKey.domain_id == Domain.id)
    .where(Domain.account_id == sa.bindparam("account_id"))
    .order_by(Domain.id, DomainKey.id)
)


async def signing_stamp(session: AsyncSession, account_id: str) -> tuple[Any, ...]:
    """The account's domains and their keys as signing uses them, in one read (compare
    stamps with stamps)."""
    return tuple(await fetch_all(session, _SIGNING, {"account_id": account_id}))


async def sending_stamp(session: AsyncSession, account_id: str) -> tuple[Any, ...]:
    """The account's domains (id, name, status, update time), whether it requires a
    verified domain and its sending defaults, as :func:`fetch_all` returns them (compare
    stamps with stamps)."""
    domains = tuple(await fetch_all(session, _STAMP, {"account_id": account_id}))
    require = tuple(await fetch_all(session, _REQUIRE, {"account_id": account_id}))
    return (domains, require)


def guard_sending(changes: Changes, account_id: str, stamp: tuple[Any, ...]) -> None:
    """``changes`` is written only while the account's domains stamp is ``stamp``."""
    domains, require = stamp
    changes.guard(_STAMP, list(domains), {"account_id": account_id})
    changes.guard(_REQUIRE, list(require), {"account_id": account_id})
