"""Stopping a running worker while it writes outcomes: the write in progress is not cut
off, the stop does not wait out its grace, and what was sent is recorded sent (not
released as "may have been sent")."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from postroute.delivery import worker as worker_module
from postroute.delivery.worker import Worker
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message, send
from tests.support.relay import RecordingRelay


async def test_a_stop_during_an_outcome_write_lets_it_finish(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    writing, go = asyncio.Event(), asyncio.Event()
    write = worker_module.recorder.write

    async def slow_write(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await go.wait()
        return await write(*args, **kwargs)

    monkeypatch.setattr(worker_module.recorder, "write", slow_write)
    worker = Worker(runtime, owner="stopping-worker")
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(writing.wait(), 10)  # sent; its outcome is being written
    with caplog.at_level(logging.WARNING, logger="postroute"):
        stopping = asyncio.create_task(worker.stop(grace=10))
        await asyncio.sleep(0.2)  # the loop has ended: its recorder task...
        assert not run.done()  # ...ends only after its write, which still waits
        go.set()
        await asyncio.wait_for(run, 10)
        await asyncio.wait_for(stopping, 10)
    assert "still in flight" not in caplog.text
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent"
    assert [a["outcome"] for a in detail["delivery_attempts"]] == ["sent"]
    assert len(relay.messages) == 1
