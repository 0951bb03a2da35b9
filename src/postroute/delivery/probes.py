"""Probing pools whose circuit is open: after the cool-down, one worker (the one whose
update moves ``down_until``) runs a connection test; success closes the circuit."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from postroute.db import transaction
from postroute.delivery.health import HealthBook
from postroute.delivery.routing import PoolDirectory
from postroute.pools import repository as pools_repo
from postroute.pools import service as pools
from postroute.pools.probe import probe
from postroute.runtime import Runtime

log = logging.getLogger("postroute.delivery")


class Prober:
    def __init__(self, runtime: Runtime, directory: PoolDirectory, health: HealthBook) -> None:
        self._rt, self._directory, self._health = runtime, directory, health
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def due(self, now: datetime) -> bool:
        """Whether a probe is due (no database work: from the health book)."""
        return bool(self._due(now))

    def _due(self, now: datetime) -> list[str]:
        due = []
        for pool_id in list(self._directory.by_id):
            h = self._health.get(pool_id)
            if not h.down or pool_id in self._tasks:
                continue
            if h.down_until is not None and h.down_until > now:
                continue
            due.append(pool_id)
        return due

    async def start_due(self, session: AsyncSession, now: datetime) -> None:
        """Claim (in the caller's transaction) and start the probes that are due."""
        for pool_id in self._due(now):
            h = self._health.get(pool_id)
            if await pools_repo.claim_probe(session, pool_id, now, now + self._health.cooldown):
                h.down_until = now + self._health.cooldown
                task = asyncio.create_task(self._probe(pool_id), name=f"probe-{pool_id}")
                self._tasks[pool_id] = task
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for pool_id, t in list(self._tasks.items()):
            if t is task:
                del self._tasks[pool_id]

    async def _probe(self, pool_id: str) -> None:
        result = await probe(self._directory.relay(pool_id), self._rt.client_options)
        now = self._rt.clock.now()
        try:
            async with transaction(self._rt.sessions) as session:
                pool = await pools_repo.get_pool_for_update(session, pool_id)
                if pool is None:
                    return
                pools.apply_probe(pool, result, now)
        except Exception:
            log.exception("recording the probe of pool %s failed", pool_id)
            return
        if result.success:
            self._health.closed(pool_id)
            log.info("pool %s answered its probe: traffic resumes", pool_id)
        else:
            log.warning("pool %s is still down: %s", pool_id, result.error_code)

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await self.wait()
