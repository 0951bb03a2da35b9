"""All SQL for accounts, users, API keys and IP credentials."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.models import Account, ApiKey, IpCredential, User


async def account_count(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.count()).select_from(Account)) or 0)


async def get_account(session: AsyncSession, account_id: str) -> Account | None:
    return await session.get(Account, account_id)


async def get_account_by_name(session: AsyncSession, name: str) -> Account | None:
    return await session.scalar(sa.select(Account).where(Account.name == name))


async def list_accounts(session: AsyncSession) -> Sequence[Account]:
    return (await session.scalars(sa.select(Account).order_by(Account.created_at))).all()


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(sa.select(User).where(sa.func.lower(User.email) == email.lower()))


async def find_key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return await session.scalar(sa.select(ApiKey).where(ApiKey.key_hash == key_hash))


async def list_keys(session: AsyncSession, account_id: str) -> Sequence[ApiKey]:
    stmt = sa.select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
    return (await session.scalars(stmt)).all()


async def get_key(session: AsyncSession, account_id: str, key_id: str) -> ApiKey | None:
    stmt = sa.select(ApiKey).where(ApiKey.account_id == account_id, ApiKey.id == key_id)
    return await session.scalar(stmt)


async def touch_key(session: AsyncSession, key_id: str, when: datetime) -> None:
    await session.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))


async def lock_ip_credentials(session: AsyncSession) -> None:
    """Serialise adds of IP credentials, so two overlapping networks of different accounts
    cannot both pass the overlap check. PostgreSQL: a table lock that readers ignore;
    SQLite's write transactions (``BEGIN IMMEDIATE``) are serialised already."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(sa.text("LOCK TABLE ip_credentials IN SHARE ROW EXCLUSIVE MODE"))


async def list_ip_credentials(
    session: AsyncSession, account_id: str | None
) -> Sequence[IpCredential]:
    stmt = sa.select(IpCredential).order_by(IpCredential.created_at)
    if account_id is not None:
        stmt = stmt.where(IpCredential.account_id == account_id)
    return (await session.scalars(stmt)).all()


async def get_ip_credential(
    session: AsyncSession, account_id: str, cred_id: str
) -> IpCredential | None:
    stmt = sa.select(IpCredential).where(
        IpCredential.account_id == account_id, IpCredential.id == cred_id
    )
    return await session.scalar(stmt)
