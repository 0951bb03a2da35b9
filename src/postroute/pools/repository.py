"""All SQL for SMTP pools and their daily usage counters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db import column_bind, fetch_all
from postroute.db.changes import Changes
from postroute.models import PoolDailyUsage, SmtpPool
from postroute.models.base import table_of


async def list_pools(session: AsyncSession, account_id: str) -> Sequence[SmtpPool]:
    stmt = (
        sa.select(SmtpPool)
        .where(SmtpPool.account_id == account_id)
        .order_by(SmtpPool.priority, SmtpPool.created_at, SmtpPool.id)
    )
    return (await session.scalars(stmt)).all()


_STAMP = (
    sa.select(
        SmtpPool.id,
        SmtpPool.name,
        SmtpPool.is_active,
        SmtpPool.is_default,
        SmtpPool.priority,
        SmtpPool.created_at,
        SmtpPool.from_email,
        SmtpPool.updated_at,
    )
    .where(SmtpPool.account_id == sa.bindparam("account_id"))
    .order_by(SmtpPool.id)
)


async def pools_stamp(session: AsyncSession, account_id: str) -> tuple[Any, ...]:
    """What a send's validation reads of the account's pools (which pools, their names,
    order, default, active flags, default From) and their update times. Equal stamps mean
    pools read earlier still hold; one hand-off on SQLite, values as the driver gives
    them (compare stamps only with stamps)."""
    return tuple(await fetch_all(session, _STAMP, {"account_id": account_id}))


def guard_stamp(changes: Changes, account_id: str, stamp: tuple[Any, ...]) -> None:
    """``changes`` is written only while the account's pools stamp is ``stamp``."""
    changes.guard(_STAMP, stamp, {"account_id": account_id})


async def get_pool(session: AsyncSession, account_id: str, pool_id: str) -> SmtpPool | None:
    stmt = sa.select(SmtpPool).where(SmtpPool.account_id == account_id, SmtpPool.id == pool_id)
    return await session.scalar(stmt)


async def get_pool_by_name(session: AsyncSession, account_id: str, name: str) -> SmtpPool | None:
    stmt = sa.select(SmtpPool).where(SmtpPool.account_id == account_id, SmtpPool.name == name)
    return await session.scalar(stmt)


async def count_pools(session: AsyncSession, account_id: str) -> int:
    stmt = sa.select(sa.func.count()).select_from(SmtpPool).where(SmtpPool.account_id == account_id)
    return int(await session.scalar(stmt) or 0)


async def clear_default(session: AsyncSession, account_id: str, except_id: str | None) -> None:
    stmt = sa.update(SmtpPool).where(SmtpPool.account_id == account_id, SmtpPool.is_default)
    if except_id is not None:
        stmt = stmt.where(SmtpPool.id != except_id)
    await session.execute(stmt.values(is_default=False))


async def delete_pool(session: AsyncSession, pool: SmtpPool) -> None:
    await session.delete(pool)


async def usage_on(
    session: AsyncSession, pool_ids: Iterable[str], day: date
) -> dict[str, PoolDailyUsage]:
    ids = list(pool_ids)
    if not ids:
        return {}
    stmt = sa.select(PoolDailyUsage).where(
        PoolDailyUsage.pool_id.in_(ids), PoolDailyUsage.day == day
    )
    return {row.pool_id: row for row in (await session.scalars(stmt)).all()}


_USAGE = table_of(PoolDailyUsage)
# The same text on SQLite (3.24+) and PostgreSQL: one statement for both.
_ADD_USAGE = sa.text(
    "INSERT INTO pool_daily_usage (pool_id, day, sent, throttled) "
    "VALUES (:pool_id, :day, :sent, :throttled) "
    "ON CONFLICT (pool_id, day) DO UPDATE SET "
    "sent = pool_daily_usage.sent + excluded.sent, "
    "throttled = pool_daily_usage.throttled + excluded.throttled"
).bindparams(*(column_bind(_USAGE, c) for c in ("pool_id", "day", "sent", "throttled")))


def add_usage(
    changes: Changes, pool_id: str, day: date, *, sent: int = 0, throttled: int = 0
) -> None:
    """Add to a pool's counters of ``day`` (an atomic upsert)."""
    row = {"pool_id": pool_id, "day": day, "sent": sent, "throttled": throttled}
    changes.execute(_ADD_USAGE, [row])


_HEALTH = (
    sa.update(SmtpPool)
    .where(
        SmtpPool.id == sa.bindparam("pool_id"),
        # another worker opened the circuit: only a success (or a probe) closes it
        sa.not_(
            sa.and_(SmtpPool.health_state == "down", sa.bindparam("keep_down", type_=sa.Boolean))
        ),
    )
    .values(
        consecutive_failures=sa.bindparam("failures", type_=sa.Integer),
        effective_rate=sa.bindparam("effective_rate", type_=sa.Float),
        health_last_checked_at=column_bind(table_of(SmtpPool), "health_last_checked_at", "at"),
        health_last_error=sa.func.coalesce(
            sa.bindparam("last_error", type_=sa.Text), SmtpPool.health_last_error
        ),
        health_state=sa.case(
            (sa.bindparam("down", type_=sa.Boolean), "down"), else_=sa.bindparam("state")
        ),
        down_until=sa.case(
            (
                sa.and_(sa.bindparam("down", type_=sa.Boolean), SmtpPool.health_state == "down"),
                SmtpPool.down_until,
            ),
            (
                sa.bindparam("down", type_=sa.Boolean),
                column_bind(table_of(SmtpPool), "down_until", "until"),
            ),
            else_=sa.null(),
        ),
    )
)


def write_health(
    changes: Changes,
    pool_id: str,
    *,
    failures: int,
    down: bool,
    down_until: datetime | None,
    effective_rate: float | None,
    last_error: str | None,
    checked_at: datetime,
    succeeded: bool,
) -> None:
    """A worker's view of a pool's health onto its row: the circuit opened (``down``,
    keeping an earlier ``down_until``), degraded (failures or slowed down) or healthy. A
    circuit another worker opened stays open unless this worker's batch had a success."""
    state = "degraded" if failures or effective_rate is not None else "healthy"
    row = {
        "pool_id": pool_id,
        "keep_down": not down and not succeeded,
        "failures": failures,
        "effective_rate": effective_rate,
        "at": checked_at,
        "last_error": last_error,
        "down": down,
        "state": state,
        "until": down_until,
    }
    changes.execute(_HEALTH, [row])


async def lock_usage(session: AsyncSession, pool_ids: Sequence[str], day: date) -> dict[str, int]:
    """Messages counted today per pool, rows locked until the transaction ends (daily
    limits are reserved under this lock, so concurrent workers never exceed them)."""
    if not pool_ids:
        return {}
    dialect = session.get_bind().dialect.name
    insert: Any = pg_insert if dialect == "postgresql" else sqlite_insert
    rows = [{"pool_id": p, "day": day, "sent": 0, "throttled": 0} for p in sorted(pool_ids)]
    await session.execute(insert(PoolDailyUsage).values(rows).on_conflict_do_nothing())
    stmt = (
        sa.select(PoolDailyUsage.pool_id, PoolDailyUsage.sent)
        .where(PoolDailyUsage.pool_id.in_(pool_ids), PoolDailyUsage.day == day)
        .order_by(PoolDailyUsage.pool_id)
        .with_for_update()
    )
    return {pool_id: sent for pool_id, sent in (await session.execute(stmt)).all()}


async def get_pool_for_update(session: AsyncSession, pool_id: str) -> SmtpPool | None:
    stmt = sa.select(SmtpPool).where(SmtpPool.id == pool_id).with_for_update()
    return await session.scalar(stmt)


async def claim_probe(session: AsyncSession, pool_id: str, now: datetime, until: datetime) -> bool:
    """Only one worker probes a pool that is down: the one that moves ``down_until``."""
    stmt = (
        sa.update(SmtpPool)
        .where(SmtpPool.id == pool_id, SmtpPool.health_state == "down")
        .where(sa.or_(SmtpPool.down_until.is_(None), SmtpPool.down_until <= now))
        .values(down_until=until)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(stmt)
    return bool(getattr(result, "rowcount", 0))
