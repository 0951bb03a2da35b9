"""Which pools may carry a message, in order (pure rules over one account's pools).

First the pool the send named, if active; else the account's default; else the first
active pool by priority (the message records why). When that pool's ``failover`` is on,
the other active pools follow by priority: relay-level trouble moves the message on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from postroute.models import SmtpPool


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
