"""Per-pool health as one worker sees it: the circuit breaker and the adaptive slow-down.

Circuit breaker: ``failures_to_open`` consecutive relay-level failures mark a pool
``down``; no traffic goes to it until a probe, after ``cooldown``, succeeds. The state is
shared through the database (``smtp_pools``); this book applies it at once locally.

Adaptive slow-down: a throttling reply (e.g. SES ``454 Throttling failure``) halves the
pool's effective rate; every ``recovery`` without one raises it by a quarter, until it
is back at the configured rate (or, without one, no longer limited).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

MIN_RATE = 0.1  # messages per second: never throttle a pool to nothing
REWRITE_EVERY = timedelta(seconds=10)  # an unchanged health is written at most this often


@dataclass
class PoolHealth:
    failures: int = 0
    down: bool = False
    down_until: datetime | None = None
    opened_at: datetime | None = None
    last_error: str | None = None
    effective_rate: float | None = None  # per second; None = only the configured limit
    last_raise: datetime | None = None
    sent_times: list[datetime] = field(default_factory=list)


@dataclass
class HealthBook:
    failures_to_open: int
    cooldown: timedelta
    recovery: timedelta = timedelta(seconds=30)
    pools: dict[str, PoolHealth] = field(default_factory=dict)
    _written: dict[str, tuple[tuple[object, ...], datetime]] = field(default_factory=dict)

    def get(self, pool_id: str) -> PoolHealth:
        return self.pools.setdefault(pool_id, PoolHealth())

    def needs_write(self, pool_id: str, now: datetime) -> bool:
        """Whether the pool's row should be written: always while the pool is not plainly
        healthy (failures, down, slowed down); a healthy one when that changed since this
        book last wrote it, or after ``REWRITE_EVERY`` (``health.last_checked_at``). Saves
        a locked read and an UPDATE per batch of outcomes while all is well. (A circuit
        another worker opened meanwhile is then not closed by this worker's next success
        for up to ``REWRITE_EVERY``; by then its claims have read that the pool is down,
        and a probe closes it.)"""
        h = self.get(pool_id)
        if h.failures or h.down or h.effective_rate is not None:
            return True  # anything but plain health: every time, as it comes
        last = self._written.get(pool_id)
        return last is None or last[0] != self._snapshot(pool_id) or now - last[1] >= REWRITE_EVERY

    def written(self, pool_id: str, now: datetime) -> None:
        self._written[pool_id] = (self._snapshot(pool_id), now)

    def _snapshot(self, pool_id: str) -> tuple[object, ...]:
        h = self.get(pool_id)
        return (h.failures, h.down, h.down_until, h.last_error, h.effective_rate)

    def sync(
        self, pool_id: str, state: str, failures: int, down_until: datetime | None, now: datetime
    ) -> None:
        """Take the shared state from the database (another worker may have opened or a
        probe closed the circuit), unless this worker just opened it and has not written
        that yet."""
        h = self.get(pool_id)
        if h.down and state != "down" and h.opened_at and now - h.opened_at < self.cooldown:
            return
        h.down = state == "down"
        h.down_until = down_until if h.down else None
        h.failures = failures

    def usable(self, pool_id: str) -> bool:
        return not self.get(pool_id).down

    def closed(self, pool_id: str) -> None:
        """A probe succeeded: traffic may flow again."""
        h = self.get(pool_id)
        h.down, h.down_until, h.opened_at, h.failures, h.last_error = False, None, None, 0, None

    def success(self, pool_id: str, now: datetime) -> None:
        h = self.get(pool_id)
        h.failures = 0
        h.sent_times.append(now)
        if len(h.sent_times) > 200:
            del h.sent_times[:100]

    def failure(self, pool_id: str, error: str, now: datetime) -> bool:
        """Count a relay-level failure; True when this one opened the circuit."""
        h = self.get(pool_id)
        h.failures += 1
        h.last_error = error
        if not h.down and h.failures >= self.failures_to_open:
            h.down, h.down_until, h.opened_at = True, now + self.cooldown, now
            return True
        return False

    def throttled(self, pool_id: str, configured: float | None, now: datetime) -> float:
        """A throttling reply: halve the effective rate. Returns the new rate."""
        h = self.get(pool_id)
        current = h.effective_rate or configured or self._observed_rate(h, now)
        h.effective_rate = max(current / 2, MIN_RATE)
        h.last_raise = now
        return h.effective_rate

    def recover(self, pool_id: str, configured: float | None, now: datetime) -> bool:
        """Raise a lowered rate step by step; True when it changed."""
        h = self.get(pool_id)
        if h.effective_rate is None or h.last_raise is None or now - h.last_raise < self.recovery:
            return False
        raised = h.effective_rate * 1.25
        h.last_raise = now
        h.effective_rate = None if configured is not None and raised >= configured else raised
        if configured is None and raised >= self._observed_rate(h, now) * 4:
            h.effective_rate = None  # far above what we send anyway: lift it
        return True

    @staticmethod
    def _observed_rate(h: PoolHealth, now: datetime) -> float:
        recent = [t for t in h.sent_times if now - t <= timedelta(seconds=10)]
        return max(len(recent) / 10.0, 1.0)


def rate_window(per_second: float) -> tuple[int, float]:
    """A rate as a sliding window: (limit, period seconds)."""
    if per_second >= 1:
        return int(per_second), 1.0
    return 1, 1.0 / per_second
