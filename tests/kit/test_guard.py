"""The limits on key guessing (``AuthGuard``): distinct wrong keys count, a slowed source
waits, a known good key never does, a correct key is slowed at worst, never refused; the
global lane bounds a distributed guesser."""

from __future__ import annotations

import asyncio
import logging

import pytest

from postroute.kit.clock import FakeClock
from postroute.kit.guard import MAX_WAITING, AuthGuard, TooManyAttempts

GOOD = "pr_live_the-right-key"


class Waits:
    """The guard's sleep: records each wait and returns at once (or when released)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)


def make(
    clock: FakeClock, waits: Waits, *, per_source: int = 3, global_limit: int = 100
) -> AuthGuard:
    return AuthGuard(
        per_source=per_source,
        global_limit=global_limit,
        slow=1.0,
        slow_max=8.0,
        clock=clock,
        sleep=waits,
    )


def lookup(key: str) -> object:
    """The database's answer: an account for the right key, None otherwise."""

    async def verify() -> str | None:
        return "acct_1" if key == GOOD else None

    return verify


async def attempt(guard: AuthGuard, source: str, key: str) -> str | None:
    return await guard.check(source, key, lookup(key))  # type: ignore[arg-type]


@pytest.fixture
def waits() -> Waits:
    return Waits()


async def test_the_same_wrong_key_again_is_not_another_failure(
    clock: FakeClock, waits: Waits
) -> None:
    guard = make(clock, waits)
    for _ in range(10):  # an app retrying a stale key; smtplib's PLAIN then LOGIN
        assert await attempt(guard, "10.0.0.1", "pr_live_stale") is None
    assert guard.failures("10.0.0.1") == 1
    assert waits.delays == []
    assert await attempt(guard, "10.0.0.1", GOOD) == "acct_1"
    assert waits.delays == []


async def test_distinct_wrong_keys_slow_that_source_only(clock: FakeClock, waits: Waits) -> None:
    guard = make(clock, waits)
    for i in range(3):
        assert await attempt(guard, "10.0.0.1", f"pr_live_guess{i}") is None
    assert waits.delays == []  # the limit is reached, not passed
    for i in range(3, 8):
        assert await attempt(guard, "10.0.0.1", f"pr_live_guess{i}") is None
    assert waits.delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped at slow_max
    assert await attempt(guard, "10.0.0.2", "pr_live_other") is None  # another source
    assert waits.delays == [1.0, 2.0, 4.0, 8.0, 8.0]


async def test_a_correct_key_from_a_slowed_source_is_slowed_not_refused(
    clock: FakeClock, waits: Waits
) -> None:
    guard = make(clock, waits)
    for i in range(3):  # a misconfigured neighbour behind the same NAT
        await attempt(guard, "192.0.2.7", f"pr_live_guess{i}")
    assert await attempt(guard, "192.0.2.7", GOOD) == "acct_1"
    assert waits.delays == [1.0]
    # Known good from now on: checked at once, however many guesses follow.
    for i in range(3, 10):
        await attempt(guard, "192.0.2.7", f"pr_live_guess{i}")
    waited = len(waits.delays)
    assert await attempt(guard, "192.0.2.7", GOOD) == "acct_1"
    assert len(waits.delays) == waited


async def test_a_known_key_that_stops_working_is_no_longer_known(
    clock: FakeClock, waits: Waits
) -> None:
    guard = make(clock, waits)
    answers: list[str | None] = ["acct_1", None]

    async def verify() -> str | None:
        return answers.pop(0)

    assert await guard.check("10.0.0.1", GOOD, verify) == "acct_1"
    assert await guard.check("10.0.0.1", GOOD, verify) is None  # revoked meanwhile
    assert guard.failures("10.0.0.1") == 1


async def test_failures_leave_the_window_after_a_minute(clock: FakeClock, waits: Waits) -> None:
    guard = make(clock, waits)
    for i in range(3):
        await attempt(guard, "10.0.0.1", f"pr_live_guess{i}")
    clock.advance(61)
    assert guard.failures("10.0.0.1") == 0
    assert await attempt(guard, "10.0.0.1", "pr_live_again") is None
    assert waits.delays == []


async def test_database_trouble_is_not_a_failure(clock: FakeClock, waits: Waits) -> None:
    guard = make(clock, waits)

    async def broken() -> str | None:
        raise ConnectionError("database unreachable")

    for _ in range(5):
        with pytest.raises(ConnectionError):
            await guard.check("10.0.0.1", f"pr_live_{_}", broken)
    assert guard.failures("10.0.0.1") == 0


async def test_a_distributed_guesser_is_bounded_by_the_global_lane(
    clock: FakeClock, waits: Waits
) -> None:
    """40 sources x 5 distinct keys each, under the per-source limit: past the global
    limit every unknown key waits its turn in one lane (60 / limit seconds each), while a
    known good key does not."""
    guard = make(clock, waits, per_source=5, global_limit=100)
    assert await attempt(guard, "198.51.100.1", GOOD) == "acct_1"
    guesses = [
        attempt(guard, f"203.0.113.{s}", f"pr_live_{s}_{i}") for s in range(40) for i in range(5)
    ]
    for guess in guesses:  # in order: the first 100 wrong keys are checked at once
        assert await guess is None
    assert waits.delays[:1] == [0.6]
    assert len(waits.delays) == 100 and sum(waits.delays) == pytest.approx(60.0)
    waited = len(waits.delays)
    assert await attempt(guard, "198.51.100.1", GOOD) == "acct_1"
    assert len(waits.delays) == waited
    assert await attempt(guard, "198.51.100.2", "pr_live_new") is None  # a fresh source too
    assert waits.delays[-1] == 0.6


async def test_too_many_waiting_checks_are_refused_at_once(clock: FakeClock, waits: Waits) -> None:
    guard = make(clock, waits)
    for i in range(3):
        await attempt(guard, "10.0.0.1", f"pr_live_guess{i}")
    waits.gate = asyncio.Event()
    waiting = [
        asyncio.ensure_future(attempt(guard, "10.0.0.1", f"pr_live_w{i}"))
        for i in range(MAX_WAITING)
    ]
    while guard.waiting("10.0.0.1") < MAX_WAITING:
        await asyncio.sleep(0.01)
    with pytest.raises(TooManyAttempts):
        await attempt(guard, "10.0.0.1", "pr_live_one_more")
    assert await attempt(guard, "10.0.0.9", "pr_live_elsewhere") is None  # others unaffected
    waits.gate.set()
    assert await asyncio.gather(*waiting) == [None] * MAX_WAITING


async def test_each_lockout_is_logged_once(
    clock: FakeClock, waits: Waits, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="postroute.auth")
    guard = make(clock, waits, per_source=2, global_limit=4)
    for i in range(6):
        await attempt(guard, "10.0.0.1", f"pr_live_guess{i}")
    lines = [r.getMessage() for r in caplog.records]
    assert sum("10.0.0.1 sent" in line for line in lines) == 1
    assert sum("from all sources" in line for line in lines) == 1
    assert all("pr_live" not in line for line in lines)  # never a key
