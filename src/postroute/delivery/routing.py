"""The worker's view of the pools it routes to (the rules: :mod:`postroute.pools.routing`),
with their relay settings decrypted and what is derived from them per claim."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.kit.crypto import SecretBox
from postroute.models import SmtpPool
from postroute.pools import repository as pools_repo
from postroute.pools import service as pools
from postroute.pools.routing import Route, candidates, rate_per_second
from postroute.relay.config import RelayConfig


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
