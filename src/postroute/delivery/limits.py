"""Per-pool rate limits and connection caps: in one process, or shared through Redis.

Rate limits are a strict sliding window: at most ``limit`` sends may *end* within any
``period``. A slot is taken before a send starts and stamped with the time the send
ended, so the relay can never see more than ``limit`` messages in one window, whatever
the latency. Slots of sends still in flight count until they end (with Redis, until a
crash-safety TTL runs out).

Connection slots cap concurrent SMTP sessions to a relay across every worker.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis

Sleep = Callable[[float], Awaitable[None]]
POLL = 0.02  # how often to look again when every slot is taken by a send in flight
IN_FLIGHT_TTL = 120.0  # seconds an unfinished send may hold a slot (crashed worker)


@dataclass(eq=False)
class Slot:
    key: str
    member: str
    at: float
    done: bool = False


class RateLimiter(Protocol):
    async def acquire(self, key: str, limit: int, period: float) -> Slot: ...
    async def complete(self, slot: Slot) -> None: ...


class ConnectionSlots(Protocol):
    async def acquire(self, key: str, limit: int) -> str | None: ...
    async def refresh(self, key: str, holder: str) -> None: ...
    async def release(self, key: str, holder: str) -> None: ...


@dataclass
class _Window:
    ended: deque[Slot] = field(default_factory=deque)  # in end-time order (clock is monotonic)
    in_flight: set[Slot] = field(default_factory=set)


@dataclass
class LocalRateLimiter:
    """Sliding log per key, in this process only."""

    now: Callable[[], float] = time.monotonic
    sleep: Sleep = asyncio.sleep
    _windows: dict[str, _Window] = field(default_factory=dict)

    async def acquire(self, key: str, limit: int, period: float) -> Slot:
        window = self._windows.setdefault(key, _Window())
        while True:
            t = self.now()
            while window.ended and window.ended[0].at <= t - period:
                window.ended.popleft()
            if len(window.ended) + len(window.in_flight) < limit:
                slot = Slot(key, "", t)
                window.in_flight.add(slot)
                return slot
            wait = window.ended[0].at + period - t if window.ended else POLL
            await self.sleep(max(wait, 0.001))

    async def complete(self, slot: Slot) -> None:
        slot.at, slot.done = self.now(), True
        window = self._windows[slot.key]
        window.in_flight.discard(slot)
        window.ended.append(slot)


_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local period = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil((period + tonumber(ARGV[4])) * 1000) + 1000)
  return {1, tostring(now)}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + period - now)}
"""

_COMPLETE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
return tostring(now)
"""

_SLOT_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 1000)
  return 1
end
return 0
"""

_SLOT_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""


class RedisRateLimiter:
    """The same sliding window in a Redis sorted set, shared by every worker (Redis time)."""

    def __init__(self, client: aioredis.Redis, sleep: Sleep = asyncio.sleep) -> None:
        self._acquire = client.register_script(_ACQUIRE)
        self._complete = client.register_script(_COMPLETE)
        self._sleep = sleep

    async def acquire(self, key: str, limit: int, period: float) -> Slot:
        member = secrets.token_hex(8)
        while True:
            ok, value = await self._acquire(
                keys=[f"postroute:rate:{key}"], args=[period, limit, member, IN_FLIGHT_TTL]
            )
            if int(ok) == 1:
                return Slot(key, member, float(value))
            await self._sleep(min(max(float(value), 0.001), POLL * 5))

    async def complete(self, slot: Slot) -> None:
        slot.at = float(
            await self._complete(keys=[f"postroute:rate:{slot.key}"], args=[slot.member])
        )
        slot.done = True


class LocalConnectionSlots:
    """In one process the senders' own task count is the cap: nothing to share."""

    async def acquire(self, key: str, limit: int) -> str | None:
        return "local"

    async def refresh(self, key: str, holder: str) -> None:
        return None

    async def release(self, key: str, holder: str) -> None:
        return None


class RedisConnectionSlots:
    """Sessions to one relay across every worker; a holder's slot expires if it dies."""

    TTL = 60.0

    def __init__(self, client: aioredis.Redis, now: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._acquire = client.register_script(_SLOT_ACQUIRE)
        self._refresh = client.register_script(_SLOT_REFRESH)
        self._now = now
        self._refreshed: dict[str, float] = {}  # holder -> when its TTL was last renewed

    async def acquire(self, key: str, limit: int) -> str | None:
        holder = secrets.token_hex(8)
        ok = await self._acquire(keys=[f"postroute:conn:{key}"], args=[limit, holder, self.TTL])
        if int(ok) != 1:
            return None
        self._refreshed[holder] = self._now()
        return holder

    async def refresh(self, key: str, holder: str) -> None:
        """Called after every message; talks to Redis only once per third of the TTL."""
        if self._now() - self._refreshed.get(holder, 0.0) < self.TTL / 3:
            return
        await self._refresh(keys=[f"postroute:conn:{key}"], args=[holder, self.TTL])
        self._refreshed[holder] = self._now()

    async def release(self, key: str, holder: str) -> None:
        self._refreshed.pop(holder, None)
        await self._client.zrem(f"postroute:conn:{key}", holder)
