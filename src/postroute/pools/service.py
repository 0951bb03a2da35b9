"""SMTP pools: create, update, delete, read with usage and health, connection test."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.kit import ids
from postroute.kit.clock import Clock
from postroute.kit.crypto import SecretBox
from postroute.models import PoolDailyUsage, SmtpPool
from postroute.pools import repository as repo
from postroute.pools.probe import ProbeResult
from postroute.pools.schemas import (
    PoolCreate,
    PoolHealth,
    PoolOut,
    PoolUpdate,
    PoolUsage,
    RateLimit,
)
from postroute.relay import errors as relay_errors
from postroute.relay.config import RelayConfig

# Failures of the relay itself (not of one message or recipient).
_RELAY_TROUBLE = frozenset(
    {
        relay_errors.SMTP_CONNECTION_ERROR,
        relay_errors.SMTP_TLS_ERROR,
        relay_errors.SMTP_AUTH_ERROR,
        relay_errors.SMTP_TIMEOUT,
    }
)


_SIMPLE_FIELDS = (
    *("name", "host", "port", "encryption", "verify_tls", "is_active", "priority"),
    *("failover", "daily_limit", "max_connections", "from_email"),
)


async def list_pools(session: AsyncSession, account_id: str) -> Sequence[SmtpPool]:
    return await repo.list_pools(session, account_id)


async def get_pool(session: AsyncSession, account_id: str, pool_id: str) -> SmtpPool:
    pool = await repo.get_pool(session, account_id, pool_id)
    if pool is None:
        raise errors.NotFound(f"no SMTP pool {pool_id!r}")
    return pool


async def find_pool(session: AsyncSession, account_id: str, ref: str) -> SmtpPool | None:
    """A pool by id or, failing that, by name."""
    return await repo.get_pool(session, account_id, ref) or await repo.get_pool_by_name(
        session, account_id, ref
    )


async def create_pool(
    session: AsyncSession, account_id: str, data: PoolCreate, box: SecretBox, clock: Clock
) -> SmtpPool:
    await _check_name_free(session, account_id, data.name, None)
    now = clock.now()
    # The account's first pool becomes its default, as a user would expect.
    make_default = data.is_default or await repo.count_pools(session, account_id) == 0
    if make_default:
        await repo.clear_default(session, account_id, None)
    pool = SmtpPool(
        id=ids.new_id(ids.POOL),
        account_id=account_id,
        name=data.name,
        host=data.host,
        port=data.port,
        username=data.username,
        password_enc=box.encrypt(data.password.get_secret_value()) if data.password else None,
        encryption=data.encryption,
        verify_tls=data.verify_tls,
        is_active=data.is_active,
        is_default=make_default,
        priority=data.priority,
        failover=data.failover,
        daily_limit=data.daily_limit,
        max_connections=data.max_connections,
        from_email=data.from_email,
        created_at=now,
        updated_at=now,
        health_state="healthy",
        consecutive_failures=0,
    )
    _set_rate_limit(pool, data.rate_limit)
    session.add(pool)
    await session.flush()
    return pool


async def update_pool(
    session: AsyncSession,
    account_id: str,
    pool_id: str,
    data: PoolUpdate,
    box: SecretBox,
    clock: Clock,
) -> SmtpPool:
    pool = await get_pool(session, account_id, pool_id)
    given = data.model_fields_set
    if "name" in given and data.name is not None and data.name != pool.name:
        await _check_name_free(session, account_id, data.name, pool.id)
    for field in _SIMPLE_FIELDS:
        if field in given:
            setattr(pool, field, getattr(data, field))
    if "rate_limit" in given:
        _set_rate_limit(pool, data.rate_limit)
    _apply_credentials(pool, data, box)
    if data.is_default is True and not pool.is_default:
        await repo.clear_default(session, account_id, pool.id)
        await session.flush()  # the old default goes before the new one (unique index)
        pool.is_default = True
    elif data.is_default is False:
        pool.is_default = False
    pool.updated_at = clock.now()
    await session.flush()
    return pool


def _apply_credentials(pool: SmtpPool, data: PoolUpdate, box: SecretBox) -> None:
    given = data.model_fields_set
    if "username" in given and data.username is None:
        if data.password is not None:
            raise errors.ValidationFailed(
                "password given without a username",
                details=[
                    {"field": "password", "message": "username is required when password is set"}
                ],
            )
        pool.username = None
        pool.password_enc = None
        return
    if "username" in given:
        pool.username = data.username
    if data.password is not None:
        pool.password_enc = box.encrypt(data.password.get_secret_value())
    if pool.username is not None and pool.password_enc is None:
        raise errors.ValidationFailed(
            "a username needs a password",
            details=[{"field": "password", "message": "password is required when username is set"}],
        )
    if pool.username is None and data.password is not None:
        raise errors.ValidationFailed(
            "password given without a username",
            details=[{"field": "username", "message": "username is required when password is set"}],
        )


async def delete_pool(session: AsyncSession, account_id: str, pool_id: str) -> None:
    pool = await get_pool(session, account_id, pool_id)
    await repo.delete_pool(session, pool)
    await session.flush()


async def _check_name_free(
    session: AsyncSession, account_id: str, name: str, pool_id: str | None
) -> None:
    other = await repo.get_pool_by_name(session, account_id, name)
    if other is not None and other.id != pool_id:
        raise errors.Conflict(
            f"an SMTP pool named {name!r} already exists",
            details=[{"field": "name", "message": "already used by another pool"}],
        )


def _set_rate_limit(pool: SmtpPool, limit: RateLimit | None) -> None:
    if limit is None:
        pool.rate_limit_count, pool.rate_limit_period = None, None
    elif limit.per_second is not None:
        pool.rate_limit_count, pool.rate_limit_period = limit.per_second, "second"
    else:
        pool.rate_limit_count, pool.rate_limit_period = limit.per_minute, "minute"


def rate_limit_of(pool: SmtpPool) -> RateLimit | None:
    if pool.rate_limit_count is None:
        return None
    if pool.rate_limit_period == "second":
        return RateLimit(per_second=pool.rate_limit_count)
    return RateLimit(per_minute=pool.rate_limit_count)


def relay_config(pool: SmtpPool, box: SecretBox) -> RelayConfig:
    """Decrypted connection settings, for the connection test and the worker only."""
    return RelayConfig(
        host=pool.host,
        port=pool.port,
        encryption=pool.encryption,
        username=pool.username,
        password=box.decrypt(pool.password_enc) if pool.password_enc else None,
        verify_tls=pool.verify_tls,
    )


async def views(session: AsyncSession, pools: Sequence[SmtpPool], clock: Clock) -> list[PoolOut]:
    usage = await repo.usage_on(session, (p.id for p in pools), clock.now().date())
    return [to_view(p, usage.get(p.id)) for p in pools]


def to_view(pool: SmtpPool, usage: PoolDailyUsage | None) -> PoolOut:
    sent = usage.sent if usage else 0
    throttled = usage.throttled if usage else 0
    remaining = None if pool.daily_limit is None else max(pool.daily_limit - sent, 0)
    return PoolOut(
        id=pool.id,
        name=pool.name,
        host=pool.host,
        port=pool.port,
        username=pool.username,
        password_set=pool.password_enc is not None,
        encryption=pool.encryption,
        verify_tls=pool.verify_tls,
        is_active=pool.is_active,
        is_default=pool.is_default,
        priority=pool.priority,
        failover=pool.failover,
        daily_limit=pool.daily_limit,
        rate_limit=rate_limit_of(pool),
        max_connections=pool.max_connections,
        from_email=pool.from_email,
        created_at=pool.created_at,
        updated_at=pool.updated_at,
        usage=PoolUsage(sent_today=sent, remaining_today=remaining, throttled_today=throttled),
        health=PoolHealth(
            state=pool.health_state,
            last_error=pool.health_last_error,
            last_checked_at=pool.health_last_checked_at,
            effective_rate=pool.effective_rate,
        ),
    )


def apply_probe(pool: SmtpPool, result: ProbeResult, now: datetime) -> None:
    """A connection test is a health check: success closes the circuit and clears the
    error; a relay-level failure marks a healthy pool degraded (a down one stays down)."""
    pool.health_last_checked_at = now
    if result.success:
        pool.health_state, pool.health_last_error = "healthy", None
        pool.consecutive_failures, pool.down_until = 0, None
        return
    pool.health_last_error = f"{result.error_code}: {result.error_detail}"
    if result.error_code in _RELAY_TROUBLE and pool.health_state == "healthy":
        pool.health_state = "degraded"


async def record_probe(
    session: AsyncSession, account_id: str, pool_id: str, result: ProbeResult, clock: Clock
) -> None:
    """The outcome of ``POST /v1/smtp-pools/{id}/test``, on the pool's health."""
    pool = await repo.get_pool(session, account_id, pool_id)
    if pool is not None:  # else deleted while the test ran
        apply_probe(pool, result, clock.now())
        await session.flush()
