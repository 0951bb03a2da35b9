"""Accounts, dashboard users and API keys: creation, authentication, revocation."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from postroute import errors
from postroute.accounts import repository as repo
from postroute.kit import ids
from postroute.kit.clock import Clock
from postroute.kit.crypto import hash_password, hash_token
from postroute.models import Account, ApiKey, User

KEY_PREFIX = "pr_live_"
# last_used_at is refreshed at most this often, so authentication is not a write per request.
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class AccountContext:
    """Who is calling: every query is scoped to ``account_id``."""

    account_id: str
    key_id: str | None = None
    touch_due: bool = False  # the key's last_used_at is older than TOUCH_EVERY


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    plaintext: str  # shown once, never stored


@dataclass(frozen=True)
class InitResult:
    account: Account
    api_key: str
    dashboard_email: str
    dashboard_password: str


async def create_account(session: AsyncSession, name: str, clock: Clock) -> Account:
    name = name.strip()
    if not name:
        raise errors.ValidationFailed("account name is required")
    if await repo.get_account_by_name(session, name) is not None:
        raise errors.Conflict(f"an account named {name!r} already exists")
    account = Account(id=ids.new_id(ids.ACCOUNT), name=name, created_at=clock.now())
    session.add(account)
    await session.flush()
    return account


async def require_account(session: AsyncSession, name_or_id: str) -> Account:
    account = await repo.get_account(session, name_or_id) or await repo.get_account_by_name(
        session, name_or_id
    )
    if account is None:
        raise errors.NotFound(f"no account named {name_or_id!r}")
    return account


async def get_account(session: AsyncSession, account_id: str) -> Account:
    account = await repo.get_account(session, account_id)
    if account is None:
        raise errors.NotFound(f"no account {account_id!r}")
    return account


async def update_settings(
    session: AsyncSession,
    account_id: str,
    *,
    require_verified_domain: bool | None = None,
    track_opens: bool | None = None,
    track_clicks: bool | None = None,
    unsubscribe_header: bool | None = None,
) -> Account:
    """Change the settings given (None: unchanged)."""
    account = await get_account(session, account_id)
    if require_verified_domain is not None:
        account.require_verified_domain = require_verified_domain
    if track_opens is not None:
        account.track_opens = track_opens
    if track_clicks is not None:
        account.track_clicks = track_clicks
    if unsubscribe_header is not None:
        account.unsubscribe_header = unsubscribe_header
    await session.flush()
    return account


async def list_accounts(session: AsyncSession) -> Sequence[Account]:
    return await repo.list_accounts(session)


async def is_initialised(session: AsyncSession) -> bool:
    return await repo.account_count(session) > 0


async def create_user(
    session: AsyncSession, account: Account, email: str, password: str, clock: Clock
) -> User:
    if await repo.get_user_by_email(session, email) is not None:
        raise errors.Conflict(f"a user with email {email!r} already exists")
    user = User(
        id=ids.new_id(ids.USER),
        account_id=account.id,
        email=email,
        password_hash=hash_password(password),
        created_at=clock.now(),
    )
    session.add(user)
    await session.flush()
    return user


async def create_key(session: AsyncSession, account_id: str, name: str, clock: Clock) -> NewKey:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=ids.new_id(ids.API_KEY),
        account_id=account_id,
        name=name.strip() or "default",
        prefix=plaintext[: len(KEY_PREFIX) + 4],
        key_hash=hash_token(plaintext),
        created_at=clock.now(),
    )
    session.add(key)
    await session.flush()
    return NewKey(key=key, plaintext=plaintext)


async def list_keys(session: AsyncSession, account_id: str) -> Sequence[ApiKey]:
    return await repo.list_keys(session, account_id)


async def revoke_key(session: AsyncSession, account_id: str, key_id: str, clock: Clock) -> ApiKey:
    key = await repo.get_key(session, account_id, key_id)
    if key is None:
        raise errors.NotFound(f"no API key {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = clock.now()
        await session.flush()
    return key


async def authenticate(session: AsyncSession, token: str, clock: Clock) -> AccountContext | None:
    """The account behind an API key, or None for an unknown or revoked key; notes when
    the key was used (at most once a minute), in the same transaction."""
    found = await identify(session, token, clock)
    if found is not None and found.touch_due:
        await touch(session, found, clock)
    return found


async def identify(session: AsyncSession, token: str, clock: Clock) -> AccountContext | None:
    """Like :func:`authenticate` without writing: reads only. ``touch_due`` says that
    :func:`touch` should note the use (in a write transaction of the caller's)."""
    if not token.startswith(KEY_PREFIX):
        return None
    key = await repo.find_key_by_hash(session, hash_token(token))
    if key is None or key.revoked_at is not None:
        return None
    due = key.last_used_at is None or clock.now() - key.last_used_at >= TOUCH_EVERY
    return AccountContext(account_id=key.account_id, key_id=key.id, touch_due=due)


async def touch(session: AsyncSession, context: AccountContext, clock: Clock) -> None:
    if context.key_id is not None:
        await repo.touch_key(session, context.key_id, clock.now())


async def initialise(
    session: AsyncSession, clock: Clock, *, account_name: str, email: str
) -> InitResult:
    """First account, dashboard user and API key (``postroute init``)."""
    if await is_initialised(session):
        raise errors.Conflict("Postroute is already initialised")
    account = await create_account(session, account_name, clock)
    password = secrets.token_urlsafe(12)
    await create_user(session, account, email, password, clock)
    key = await create_key(session, account.id, "init", clock)
    return InitResult(account, key.plaintext, email, password)
