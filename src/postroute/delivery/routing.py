"""Which pools may carry a message, in order.

First the pool the send named, if active; else the account's default; else the first
active pool by priority (the message records why). When that pool's ``failover`` is on,
the other active pools follow by priority: relay-level trouble moves the message on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.kit.crypto import SecretBox
from postroute.models import SmtpPool
from postroute.pools import repository as pools_repo
from postroute.pools import service as pools
from postroute.relay.config import RelayConfig


@dataclass(frozen=True)
class Route:
    pool_id: str
    note: str | None = None  # why another pool than the one asked for


def choose(pools_by_priority: Sequence[SmtpPool], wanted: str | None) -> Route | None:
    """Pure routing rule over one account's pools, ordered by priority."""
    active = [p for p in pools_by_priority if p.is_active]
    if wanted is not None:
        for pool in active:
            if pool.id == wanted:
                return Route(pool.id)
    default = next((p for p in active if p.is_default), None)
    if default is not None:
        note = None if wanted is None else f"pool {wanted} is inactive or deleted; used the default"
        return Route(default.id, note)
    if active:
        reason = "no default pool" if wanted is None else f"pool {wanted} is inactive or deleted"
        return Route(active[0].id, f"{reason}; used the first active pool by priority")
    return None


def candidates(
    pools_by_priority: Sequence[SmtpPool], wanted: str | None
) -> tuple[Route | None, list[SmtpPool]]:
    """The route and every pool that may carry the message, in the order to try them."""
    route = choose(pools_by_priority, wanted)
    if route is None:
        return None, []
    primary = next(p for p in pools_by_priority if p.id == route.pool_id)
    if not primary.failover:
        return route, [primary]
    others = [p for p in pools_by_priority if p.is_active and p.id != primary.id]
    return route, [primary, *others]


def rate_per_second(pool: SmtpPool) -> float | None:
    if pool.rate_limit_count is None:
        return None
    return pool.rate_limit_count / (1.0 if pool.rate_limit_period == "second" else 60.0)


class PoolDirectory:
    """The worker's view of every pool it routes to, with decrypted relay settings."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box
        self.by_account: dict[str, list[SmtpPool]] = {}
        self.by_id: dict[str, SmtpPool] = {}
        self._relays: dict[str, RelayConfig] = {}
        self._versions: dict[str, object] = {}
        # Derived per message and per report, so kept until the next refresh.
        self._routes: dict[tuple[str, str | None], tuple[Route | None, list[SmtpPool]]] = {}
        self._rates: dict[str, float | None] = {}

    async def refresh(self, session: AsyncSession, account_ids: Iterable[str]) -> None:
        for account_id in account_ids:
            rows = list(await pools_repo.list_pools(session, account_id))
            self.by_account[account_id] = rows
            for pool in rows:
                self.by_id[pool.id] = pool
                if self._versions.get(pool.id) != pool.updated_at:
                    self._relays[pool.id] = pools.relay_config(pool, self._box)
                    self._versions[pool.id] = pool.updated_at
        # After the last await: nothing derived from the pools read before stays.
        self._routes.clear()
        self._rates.clear()

    def candidates(
        self, account_id: str, wanted: str | None
    ) -> tuple[Route | None, list[SmtpPool]]:
        """``candidates`` for the account's pools (the list must not be changed)."""
        key = (account_id, wanted)
        found = self._routes.get(key)
        if found is None:
            found = self._routes[key] = candidates(self.by_account.get(account_id, []), wanted)
        return found

    def rate(self, pool_id: str) -> float | None:
        """The pool's configured rate limit per second, if any (None for an unknown pool)."""
        if pool_id not in self._rates:
            pool = self.by_id.get(pool_id)
            self._rates[pool_id] = rate_per_second(pool) if pool is not None else None
        return self._rates[pool_id]

    def relay(self, pool_id: str) -> RelayConfig:
        return self._relays[pool_id]
