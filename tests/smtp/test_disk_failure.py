"""A failed fsync of the SQLite WAL: the message is refused with 451 (it is committed, but
not known to be on disk), and the process stops with exit status 74 (EX_IOERR) so that its
supervisor restarts it and SQLite recovers the WAL (as PostgreSQL stops on a failed
fsync). The same for the worker's outcome writes, in process or in ``serve``'s child."""

from __future__ import annotations

import asyncio
import errno
import smtplib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from postroute.config import Settings
from postroute.db.sqlite import writer as sqlite_writer
from postroute.process import Parts, serve_forever
from postroute.runtime import Runtime
from postroute.smtp import replies
from postroute.worker_process import EXIT_DISK_FAILED, WorkerProcess
from tests.conftest import BACKEND, Tenant
from tests.delivery.conftest import add_pool
from tests.delivery.conftest import send as send_http
from tests.delivery.test_lost_lease import HeldData
from tests.smtp.conftest import BASIC, HOST
from tests.support.relay import RecordingRelay, closed_port

pytestmark = [
    pytest.mark.skipif(BACKEND != "sqlite", reason="the SQLite writer's own fsync"),
    pytest.mark.usefixtures("loopback_credential", "relay_pool"),
]


def send(port: int) -> tuple[int, bytes]:
    """The reply to the message; no QUIT (the process may be stopping: 421)."""
    smtp = smtplib.SMTP(HOST, port, timeout=10)
    try:
        smtp.ehlo("app.example.com")
        smtp.mail("shop@example.com")
        smtp.rcpt("customer@example.org")
        return smtp.data(BASIC)
    finally:
        smtp.close()


async def test_a_failed_fsync_is_451_and_stops_the_process(
    settings: Settings, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    parts = Parts(api=False, worker=False, smtp=True)
    settings = settings.model_copy(
        update={"smtp_bind": f"{HOST}:{port}", "smtps_bind": f"{HOST}:{closed_port()}"}
    )
    calls: list[int] = []

    def broken(fd: int) -> None:
        calls.append(fd)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sqlite_writer, "fsync_wal", broken)
    process = asyncio.create_task(serve_forever(settings, parts))
    try:
        for _ in range(200):  # until it listens
            if process.done():
                break
            try:
                _, probe = await asyncio.open_connection(HOST, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            probe.close()
            await probe.wait_closed()
            break
        code, text = await asyncio.to_thread(send, port)
        assert (code, text) == (451, replies.S451_TRANSIENT.message)
        assert calls, "the commit was synced"
        status: Any = await asyncio.wait_for(process, 30)
    finally:
        if not process.done():
            process.cancel()
    assert status == EXIT_DISK_FAILED


async def test_a_failed_fsync_of_outcomes_stops_the_worker(
    settings: Settings,
    runtime: Runtime,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker (in process, as ``postroute worker`` runs it) sends a message, its
    outcome's fsync fails: the process stops cleanly, with 74, not with a traceback.
    (The fsync is broken while the relay holds the second message's DATA: that message
    was stored by the API with an intact disk.)"""
    await add_pool(client, tenant, relay.port, name="outcomes", is_default=True)
    settings = settings.model_copy(
        update={"worker_record_seconds": 0.0, "worker_poll_seconds": 0.05}
    )
    process = asyncio.create_task(serve_forever(settings, Parts(api=False, worker=True)))
    try:
        await send_http(client, tenant)
        await relay.wait_for_async(1)
        calls: list[int] = []

        def broken(fd: int) -> None:
            calls.append(fd)
            raise OSError(errno.EIO, "Input/output error")

        for _ in range(200):  # the first outcome is written
            listed = (await client.get("/v1/messages", headers=tenant.headers)).json()["data"]
            if listed[0]["status"] == "sent":
                break
            await asyncio.sleep(0.05)
        held = HeldData()
        relay.script(data=held)
        await send_http(client, tenant)
        assert await asyncio.to_thread(held.entered.wait, 10), "DATA never reached the relay"
        monkeypatch.setattr(sqlite_writer, "fsync_wal", broken)
        held.release.set()
        status = await asyncio.wait_for(process, 60)
    finally:
        if not process.done():
            process.cancel()
    assert status == EXIT_DISK_FAILED
    assert calls and len(relay.messages) == 2


class _Child(WorkerProcess):
    """A worker child that stops as one whose fsync failed: at once, or when told to stop
    (its last outcomes failed to be written)."""

    def __init__(self, on_disk_failure: Callable[[], None], *, at_stop: bool = False) -> None:
        super().__init__(stop_grace=1, on_disk_failure=on_disk_failure)
        self.spawned = 0
        self.at_stop = at_stop

    def _spawn(self) -> None:
        self.spawned += 1
        code = f"raise SystemExit({EXIT_DISK_FAILED})"
        if self.at_stop:
            code = (
                "import signal, sys, time\n"
                f"signal.signal(signal.SIGTERM, lambda *_: sys.exit({EXIT_DISK_FAILED}))\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)"
            )
        out = subprocess.PIPE if self.at_stop else None
        self._child = subprocess.Popen([sys.executable, "-c", code], stdout=out)


async def test_serve_stops_when_its_worker_child_failed_an_fsync() -> None:
    """Not restarted beside a process that keeps the database open (SQLite recovers the
    WAL only when its first connection opens it): ``serve`` itself stops."""
    failed = asyncio.Event()
    child = _Child(failed.set)
    await child.start()
    try:
        await asyncio.wait_for(failed.wait(), 30)
    finally:
        await child.stop()
    assert child.spawned == 1


async def test_serve_stops_with_74_when_its_child_fails_an_fsync_while_stopping() -> None:
    failed = asyncio.Event()
    child = _Child(failed.set, at_stop=True)
    await child.start()
    try:
        assert child._child is not None and child._child.stdout is not None
        assert await asyncio.to_thread(child._child.stdout.readline) == b"ready\n"
    finally:
        await child.stop()
        if child._child is not None and child._child.stdout is not None:
            child._child.stdout.close()
    assert failed.is_set() and child.spawned == 1
