"""Limits on API-key guessing, shared by SMTP AUTH and HTTP Bearer authentication.

Keys are 256-bit random, so the aim is to bound the rate and cost of guessing while a
correct key keeps working, also for a client behind the same NAT as a guesser:

* A failure is a *distinct* wrong key from one source (client address) within a minute:
  the same wrong key again (an app retrying with a stale key, smtplib's ``login()``
  trying PLAIN and then LOGIN) is not counted again.
* A source with ``per_source`` failures in the last minute is *slowed*: each check of a
  key not known to be good from it waits its turn, one at a time, after a delay that
  doubles with its failures (``slow`` seconds up to ``slow_max``).
* With ``global_limit`` failures in the last minute from all sources together, every
  check of a key not known to be good goes through one global lane, at most
  ``global_limit`` checks a minute, fair between sources (a source has at most one
  check in that lane).
* A key that authenticated successfully in this process is *known good*: it is checked
  at once whatever the limits (and still against the database, so a revoked key
  fails). A correct key is therefore never refused: it is at worst slowed once.
* At most ``MAX_WAITING`` checks wait per source (``MAX_WAITING_ALL`` in all); past
  that a check is refused at once (:class:`TooManyAttempts`: SMTP 454, HTTP 429).

Time for the window comes from the injected clock; the waits use ``sleep`` (asyncio's
by default), which tests replace to observe them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from postroute.kit.clock import Clock
from postroute.kit.crypto import hash_token

log = logging.getLogger("postroute.auth")
T = TypeVar("T")
WINDOW = timedelta(minutes=1)
KNOWN_GOOD = 10_000  # keys remembered as good (least recently used forgotten first)
MAX_WAITING = 10  # checks waiting per source
MAX_WAITING_ALL = 1_000  # checks waiting in all
MAX_SOURCES = 100_000  # sources whose failures are remembered


class TooManyAttempts(Exception):
    """Too many authentication attempts are already waiting: try again later."""


class AuthGuard:
    def __init__(
        self,
        *,
        per_source: int,
        global_limit: int,
        slow: float,
        slow_max: float,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_source = per_source
        self.global_limit = global_limit
        self.slow = slow
        self.slow_max = slow_max
        self._clock = clock
        self._sleep = sleep
        self._failures: OrderedDict[str, dict[str, datetime]] = OrderedDict()
        self._all: deque[datetime] = deque()  # every failure, for the global limit
        self._good: OrderedDict[str, None] = OrderedDict()
        self._lanes: dict[str, asyncio.Lock] = {}
        self._global_lane = asyncio.Lock()
        self._waiting: dict[str, int] = {}
        self._slowed: set[str] = set()  # sources whose slowing was logged
        self._global_slowed = False

    async def check(
        self, source: str, key: str, verify: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        """``verify()`` (the database lookup of ``key``) under the limits: its result, or
        None for a wrong key (counted against ``source``). Its errors (database trouble)
        pass through and count as nothing. :class:`TooManyAttempts` when too many checks
        already wait."""
        digest = hash_token(key)
        if digest in self._good:
            return await self._verify(source, digest, verify)
        now = self._clock.now()
        slow_source = self.failures(source, now) >= self.per_source
        slow_global = self._global_count(now) >= self.global_limit
        if not (slow_source or slow_global):
            return await self._verify(source, digest, verify)
        self._note_slowed(source, slow_source, slow_global, now)
        waiting = self._waiting.get(source, 0)
        if waiting >= MAX_WAITING or sum(self._waiting.values()) >= MAX_WAITING_ALL:
            raise TooManyAttempts("too many authentication attempts waiting")
        self._waiting[source] = waiting + 1
        lane = self._lanes.setdefault(source, asyncio.Lock())
        try:
            async with lane:  # one check at a time per slowed source
                if slow_source:
                    await self._sleep(self.delay(source))
                if slow_global:  # a source has at most one check in the global lane
                    async with self._global_lane:
                        await self._sleep(60.0 / self.global_limit)
                return await self._verify(source, digest, verify)
        finally:
            self._waiting[source] -= 1
            if not self._waiting[source]:
                del self._waiting[source]
                if not lane.locked():
                    self._lanes.pop(source, None)

    def failures(self, source: str, now: datetime | None = None) -> int:
        """Distinct wrong keys from ``source`` in the last minute."""
        seen = self._failures.get(source)
        if not seen:
            return 0
        horizon = (now or self._clock.now()) - WINDOW
        for digest in [d for d, when in seen.items() if when <= horizon]:
            del seen[digest]
        if not seen:
            del self._failures[source]
            self._slowed.discard(source)
        return len(seen)

    def waiting(self, source: str) -> int:
        """Checks from ``source`` waiting in its slow lane."""
        return self._waiting.get(source, 0)

    def delay(self, source: str) -> float:
        """The wait before the next check of an unknown key from a slowed source."""
        excess = max(self.failures(source) - self.per_source, 0)
        return min(self.slow * float(2 ** min(excess, 16)), self.slow_max)

    async def _verify(
        self, source: str, digest: str, verify: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        result = await verify()
        if result is None:
            self._good.pop(digest, None)
            self._fail(source, digest)
        else:
            self._good[digest] = None
            self._good.move_to_end(digest)
            if len(self._good) > KNOWN_GOOD:
                self._good.popitem(last=False)
        return result

    def _fail(self, source: str, digest: str) -> None:
        now = self._clock.now()
        seen = self._failures.setdefault(source, {})
        self._failures.move_to_end(source)
        if digest not in seen:  # the same wrong key again is not another guess
            self._all.append(now)
        seen[digest] = now
        if len(self._failures) > MAX_SOURCES:
            forgotten, _ = self._failures.popitem(last=False)
            self._slowed.discard(forgotten)

    def _global_count(self, now: datetime) -> int:
        horizon = now - WINDOW
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        if self._global_slowed and len(self._all) < self.global_limit:
            self._global_slowed = False
            log.warning("authentication: wrong keys back under %d a minute", self.global_limit)
        return len(self._all)

    def _note_slowed(
        self, source: str, slow_source: bool, slow_global: bool, now: datetime
    ) -> None:
        """One log line when a source, or everyone, starts being slowed."""
        if slow_source and source not in self._slowed:
            self._slowed.add(source)
            log.warning(
                "authentication: %s sent %d different wrong keys in a minute: its unknown "
                "keys are now checked one at a time, slowly",
                source,
                self.failures(source, now),
            )
        if slow_global and not self._global_slowed:
            self._global_slowed = True
            log.warning(
                "authentication: %d different wrong keys in a minute from all sources: "
                "unknown keys are now checked at most %d a minute",
                len(self._all),
                self.global_limit,
            )
