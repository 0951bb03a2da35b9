"""A failed fsync of the SQLite WAL: the message is refused with 451 (it is committed, but
not known to be on disk), and the process stops with exit status 1 so that its supervisor
restarts it and SQLite recovers the WAL (as PostgreSQL stops on a failed fsync)."""

from __future__ import annotations

import asyncio
import errno
import smtplib
from typing import Any

import pytest

from postroute import sqlite_writer
from postroute.api.runtime import Runtime
from postroute.config import Settings
from postroute.process import Parts, serve_forever
from postroute.smtp import replies
from tests.conftest import BACKEND
from tests.smtp.conftest import BASIC, HOST
from tests.support.relay import closed_port

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
    assert status == 1
