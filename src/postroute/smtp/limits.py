"""Per-client-IP counters of the SMTP listeners: connections per window (AUTH failures are
the :class:`~postroute.kit.guard.AuthGuard`'s, shared with the HTTP API).

Kept in process memory (one set per ``postroute smtp`` / ``serve`` process), with the
time from an injected clock so tests move it instead of sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from postroute.config import Settings
from postroute.kit.clock import Clock

WINDOW = timedelta(minutes=1)


class SlidingWindow:
    """At most ``limit`` events per key within the last ``window`` (a sliding log)."""

    def __init__(self, limit: int, clock: Clock, window: timedelta = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[str, deque[datetime]] = {}
        self._swept = clock.now()

    def count(self, key: str) -> int:
        """Events of ``key`` still inside the window."""
        now = self._clock.now()
        self._sweep(now)
        events = self._events.get(key)
        if events is None:
            return 0
        self._expire(events, now)
        return len(events)

    def full(self, key: str) -> bool:
        """True when one more event would be over the limit."""
        return self.count(key) >= self.limit

    def record(self, key: str) -> None:
        self._events.setdefault(key, deque()).append(self._clock.now())

    def admit(self, key: str) -> bool:
        """Record an event unless the limit is reached; False means refused (not recorded)."""
        if self.full(key):
            return False
        self.record(key)
        return True

    def _expire(self, events: deque[datetime], now: datetime) -> None:
        horizon = now - self.window
        while events and events[0] <= horizon:
            events.popleft()

    def _sweep(self, now: datetime) -> None:
        """Forget idle keys once per window, so the table stays as small as the traffic."""
        if now - self._swept < self.window:
            return
        self._swept = now
        for key in list(self._events):
            events = self._events[key]
            self._expire(events, now)
            if not events:
                del self._events[key]


@dataclass(frozen=True)
class Limits:
    """The per-IP counters shared by every listener of one process."""

    connections: SlidingWindow

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> Limits:
        return cls(
            connections=SlidingWindow(settings.smtp_max_connections_per_ip_per_minute, clock)
        )
