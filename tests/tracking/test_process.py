"""``postroute serve`` records hits durably: its recorder is patched to never drain on its
own (``DRAIN_SECONDS``), so what reaches the database is what a stop or the next start
drained. SIGTERM: every hit answered is an event when the process has exited. SIGKILL:
none is, until the next ``serve`` on the same data dir drains the journal it left."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from postroute.delivery.worker import Worker
from postroute.events import names
from postroute.models import MessageEvent
from postroute.preparation.tokens import Tokens
from postroute.runtime import Runtime
from postroute.tracking.service import JOURNAL_DIR
from tests.conftest import Tenant
from tests.support.processes import Process, Processes
from tests.support.relay import HOST, RecordingRelay
from tests.tracking.conftest import sent_messages

NEVER_DRAINS = """
import sys
from postroute.tracking import recorder
recorder.DRAIN_SECONDS = 3600.0
sys.argv = ["postroute", sys.argv[1]]
from postroute.cli import main
main()
"""
TIMEOUT = 60.0


@pytest.fixture
def processes(runtime: Runtime, tmp_path: Path) -> Iterator[Processes]:
    with Processes(runtime.settings, tmp_path) as started:
        yield started


def hit(proc: Process, tokens: Tokens, message_id: str) -> int:
    """An open and two clicks; how many hits were answered."""
    paths = ["/t/o/" + tokens.open_token(message_id)]
    paths += ["/t/c/" + tokens.click_token(message_id, i, f"https://shop.example.com/{i}")
              for i in range(2)]  # fmt: skip
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        assert [http.get(path).status_code for path in paths] == [200, 302, 302]
    return len(paths)


async def recorded(runtime: Runtime, message_id: str) -> int:
    async with runtime.sessions() as session:
        count = await session.scalar(
            sa.select(sa.func.count()).where(
                MessageEvent.message_id == message_id,
                MessageEvent.type.in_((names.OPENED, names.CLICKED)),
            )
        )
    return int(count or 0)


async def test_a_stopping_serve_drains_every_hit_it_answered(
    processes: Processes,
    runtime: Runtime,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    proc = processes.start("serve", http=True, smtp=False, code=NEVER_DRAINS)
    answered = await asyncio.to_thread(hit, proc, tokens, message_id)
    proc.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait) == 0, proc.output
    assert await recorded(runtime, message_id) == answered
    assert list((proc.data_dir / JOURNAL_DIR).iterdir()) == []


async def test_hits_of_a_killed_serve_are_drained_by_the_next_one(
    processes: Processes,
    runtime: Runtime,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    first = processes.start("serve", http=True, smtp=False, code=NEVER_DRAINS)
    answered = await asyncio.to_thread(hit, first, tokens, message_id)
    first.kill_all()  # as a crash of the machine: no stop, no drain
    assert await recorded(runtime, message_id) == 0
    assert len(list((first.data_dir / JOURNAL_DIR).glob("*.jsonl"))) == 1

    again = processes.start("serve", http=True, smtp=False, data_dir=first.data_dir)
    deadline = time.monotonic() + TIMEOUT
    while await recorded(runtime, message_id) < answered and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await recorded(runtime, message_id) == answered, again.output
    again.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(again.wait) == 0, again.output
    assert await recorded(runtime, message_id) == answered  # once, not twice


async def opened_from(runtime: Runtime, message_id: str) -> list[dict[str, object]]:
    async with runtime.sessions() as session:
        rows = await session.scalars(
            sa.select(MessageEvent.data).where(
                MessageEvent.message_id == message_id, MessageEvent.type == names.OPENED
            )
        )
        return [dict(r) for r in rows]


@pytest.mark.parametrize(("trusted", "seen"), [("127.0.0.1", "17.58.0.1"), ("10.9.9.9", HOST)])
async def test_the_client_address_comes_from_a_trusted_proxy_only(
    processes: Processes,
    runtime: Runtime,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    trusted: str,
    seen: str,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    proc = processes.start("serve", http=True, smtp=False, POSTROUTE_TRUSTED_PROXIES=trusted)
    headers = {
        "X-Forwarded-For": "17.58.0.1",  # Apple's network: Mail Privacy Protection
        "User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
    }

    def open_once() -> None:
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            reply = http.get("/t/o/" + tokens.open_token(message_id), headers=headers)
            assert reply.status_code == 200

    await asyncio.to_thread(open_once)
    proc.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait) == 0, proc.output
    (data,) = await opened_from(runtime, message_id)
    assert data["ip"] == seen
    assert (data["machine_reason"] == "apple_mpp") is (seen != HOST)
