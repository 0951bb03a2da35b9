"""Recording is durable: a hit answered is in the journal on disk; a recorder that stops
before draining (a crash) leaves its segment to the next one, which drains it; a drain
run again over hits stored already (a crash after the write, before the unlink) counts
nothing twice; a segment being written is never taken by another drainer; hits for a
message that is gone are dropped; a journal that cannot be written costs the hit, not
the reader's redirect."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from postroute.delivery.worker import Worker
from postroute.events import names
from postroute.kit.clock import FakeClock
from postroute.preparation.tokens import Tokens
from postroute.runtime import Runtime
from postroute.tracking.journal import SUFFIX, claim_leftovers
from postroute.tracking.service import Tracking
from tests.conftest import Tenant
from tests.support.relay import RecordingRelay
from tests.tracking.conftest import events_of, sent_messages

URL = "https://shop.example.com/a"


async def crash(tracking: Tracking) -> list[Path]:
    """Stop ``tracking`` as a killed process would: nothing drained, its lock let go.
    The segments it leaves."""
    journal = tracking.recorder.journal
    await journal.close()
    segment = await journal.seal()
    assert segment is not None
    segment.release()
    return sorted(journal.directory.glob("*" + SUFFIX))


async def hit_all(client: httpx.AsyncClient, tokens: Tokens, message_id: str) -> None:
    assert (await client.get("/t/o/" + tokens.open_token(message_id))).status_code == 200
    for index in range(3):
        token = tokens.click_token(message_id, index, f"{URL}/{index}")
        assert (await client.get("/t/c/" + token)).status_code == 302


async def counts(client: httpx.AsyncClient, tenant: Tenant, message_id: str) -> tuple[int, int]:
    events = await events_of(client, tenant, message_id, names.OPENED, names.CLICKED)
    return (
        sum(e["type"] == names.OPENED for e in events),
        sum(e["type"] == names.CLICKED for e in events),
    )


async def test_hits_journaled_before_a_crash_are_drained_by_the_next_recorder_once(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    tracking: Tracking,
    runtime: Runtime,
    clock: FakeClock,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    clock.advance(60)
    await hit_all(client, tokens, message_id)
    (segment,) = await crash(tracking)
    kept = segment.read_bytes()
    assert kept.count(b"\n") == 4  # every answered hit is on disk
    assert await counts(client, tenant, message_id) == (0, 0)

    after = Tracking.build(runtime)
    try:
        assert await after.recorder.drain() == 4  # leftovers are claimed first
        assert not segment.exists()
        assert await counts(client, tenant, message_id) == (1, 3)
        # a crash after that write and before the unlink: the same segment again
        segment.write_bytes(kept)
        assert await after.recorder.drain(final=True) == 0
        assert not segment.exists()
    finally:
        await after.stop()
    assert await counts(client, tenant, message_id) == (1, 3)


async def test_a_segment_being_written_is_never_claimed(
    client: httpx.AsyncClient, tokens: Tokens, tracking: Tracking
) -> None:
    await client.get("/t/o/" + tokens.open_token("msg_0123456789ABCDEFGHIJKLMNOP"))
    directory = tracking.recorder.journal.directory
    assert len(list(directory.glob("*" + SUFFIX))) == 1
    assert claim_leftovers(directory, 10) == []  # the journal holds its lock
    segment = await tracking.recorder.journal.seal()
    assert segment is not None
    assert claim_leftovers(directory, 10) == []  # the recorder holds it now
    segment.release()
    (claimed,) = claim_leftovers(directory, 10)
    assert claimed.path == segment.path
    claimed.release()


async def test_hits_for_a_message_that_is_gone_are_dropped(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    tracking: Tracking,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    gone = "msg_0123456789ABCDEFGHIJKLMNOP"
    await hit_all(client, tokens, gone)
    await hit_all(client, tokens, message_id)
    with caplog.at_level(logging.DEBUG, logger="postroute.tracking"):
        assert await tracking.recorder.drain(final=True) == 4
    assert any(gone in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    directory = tracking.recorder.journal.directory
    assert list(directory.glob("*" + SUFFIX)) == []


async def test_a_torn_last_line_is_not_a_hit(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    tracking: Tracking,
    runtime: Runtime,
) -> None:
    """A crash in the middle of a write leaves part of a line that was never answered."""
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    await client.get("/t/o/" + tokens.open_token(message_id))
    (segment,) = await crash(tracking)
    whole = segment.read_bytes()
    segment.write_bytes(whole + whole[: len(whole) // 2])
    after = Tracking.build(runtime)
    try:
        assert await after.recorder.drain(final=True) == 1
    finally:
        await after.stop()
    assert await counts(client, tenant, message_id) == (1, 0)
    assert not segment.exists()


async def test_a_journal_that_cannot_be_written_still_answers(
    client: httpx.AsyncClient,
    tokens: Tokens,
    tracking: Tracking,
    caplog: pytest.LogCaptureFixture,
) -> None:
    directory = tracking.recorder.journal.directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    directory.write_text("not a directory")  # the journal's place is taken
    message_id = "msg_0123456789ABCDEFGHIJKLMNOP"
    with caplog.at_level(logging.ERROR, logger="postroute.tracking"):
        pixel = await client.get("/t/o/" + tokens.open_token(message_id))
        click = await client.get("/t/c/" + tokens.click_token(message_id, 0, URL))
    assert pixel.status_code == 200 and pixel.content.startswith(b"GIF89a")
    assert click.status_code == 302 and click.headers["location"] == URL
    assert sum("a hit was not recorded" in r.getMessage() for r in caplog.records) == 2


async def rename(runtime: Runtime, old: str, new: str) -> None:
    async with runtime.engine.begin() as conn:
        await conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))


async def test_a_failed_drain_keeps_its_hits_for_the_next_one(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    tracking: Tracking,
    runtime: Runtime,
    clock: FakeClock,
) -> None:
    """The events table unreachable for a while (renamed away: a real failure of the
    database): the drain fails, the hits stay, the next drain records each once."""
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    clock.advance(60)
    await hit_all(client, tokens, message_id)
    await rename(runtime, "message_events", "message_events_away")
    try:
        with pytest.raises(sa.exc.DBAPIError):
            await tracking.recorder.drain(final=True)
    finally:
        await rename(runtime, "message_events_away", "message_events")
    assert len(list(tracking.recorder.journal.directory.glob("*" + SUFFIX))) == 1
    assert await tracking.recorder.drain(final=True) == 4
    assert await counts(client, tenant, message_id) == (1, 3)
