"""Deciding, for one claimed message, which pool takes it now, or until when it waits.

Pure functions over the worker's state: the candidates in order (routing), the circuit
breaker, the daily budget left per pool, and each pool's backlog against its rate.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from postroute.delivery.health import HealthBook
from postroute.delivery.senders import POOL_DOWN
from postroute.models import SmtpPool
from postroute.relay.errors import SMTP_RATE_LIMIT

BACKLOG_SECONDS = 5.0
# a rate-limited pool gets at most BACKLOG_SECONDS of work queued; a pool due for its
# probe is looked at again after PROBE_GRACE
PROBE_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class Take:
    pool_id: str
    reserved: bool


@dataclass(frozen=True)
class Hold:
    until: datetime
    error_code: str
    reason: str


@dataclass
class Budget:
    """Daily slots left per daily-limited pool, and what this claim used or refused."""

    left: dict[str, int]
    reserved: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)

    def take(self, pool_id: str) -> bool | None:
        """True: reserved; False: limit reached; None: the pool has no daily limit."""
        if pool_id not in self.left:
            return None
        if self.left[pool_id] <= 0:
            self.throttled[pool_id] += 1
            return False
        self.left[pool_id] -= 1
        self.reserved[pool_id] += 1
        return True


def next_utc_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def pick(
    pools: list[SmtpPool],
    health: HealthBook,
    budget: Budget,
    backlog: dict[str, tuple[int, float | None]],
    now: datetime,
) -> Take | Hold:
    """The first candidate that is up, has daily budget and room in its rate backlog."""
    waits: list[Hold] = []
    for pool in pools:
        state = health.get(pool.id)
        if state.down:
            until = max(state.down_until or now + health.cooldown, now + PROBE_GRACE)
            waits.append(Hold(until, POOL_DOWN, f"pool {pool.name} is down"))
            continue
        queued, rate = backlog.get(pool.id, (0, None))
        if rate is not None and queued >= max(rate * BACKLOG_SECONDS, pool.max_connections * 2):
            budget.throttled[pool.id] += 1
            until = now + timedelta(seconds=max(queued / rate, 1.0))
            waits.append(Hold(until, SMTP_RATE_LIMIT, f"rate limit of pool {pool.name}"))
            continue
        reserved = budget.take(pool.id)
        if reserved is False:
            reason = f"daily limit of pool {pool.name} reached"
            waits.append(Hold(next_utc_midnight(now), SMTP_RATE_LIMIT, reason))
            continue
        return Take(pool.id, reserved is True)
    if not waits:
        return Hold(now + timedelta(seconds=60), "no_pool_configured", "no active SMTP pool")
    first = min(waits, key=lambda h: h.until)
    return Hold(first.until, first.error_code, "; ".join(h.reason for h in waits))
