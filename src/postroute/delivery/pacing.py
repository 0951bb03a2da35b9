"""Pacing of one pool's sends: its configured rate limit and its adaptive (slowed) rate."""

from __future__ import annotations

from collections.abc import Callable

from postroute.delivery.health import rate_window
from postroute.delivery.limits import RateLimiter, Slot

Windows = Callable[[str], list[tuple[str, int, float]]]


class Pacer:
    def __init__(self, limiter: RateLimiter, windows: Windows) -> None:
        self._limiter = limiter
        self._windows = windows

    async def turn(self, pool_id: str) -> list[Slot]:
        """Wait until a send to this pool keeps within every window; hold the slots."""
        slots = []
        try:
            for key, limit, period in self._windows(pool_id):
                slots.append(await self._limiter.acquire(key, limit, period))
        except BaseException:
            await self.done(slots)
            raise
        return slots

    async def done(self, slots: list[Slot]) -> None:
        for slot in slots:
            await self._limiter.complete(slot)


def windows_for(
    configured: float | None, effective: float | None, pool_id: str
) -> list[tuple[str, int, float]]:
    out = []
    if configured is not None:
        out.append((pool_id, *rate_window(configured)))
    if effective is not None and (configured is None or effective < configured):
        out.append((f"{pool_id}:adaptive", *rate_window(effective)))
    return out
