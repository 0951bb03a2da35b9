"""Stopping a process always completes: SIGTERM stops ``serve`` and ``smtp`` whatever
their SMTP sessions are doing; a part that fails to stop does not keep the others (or the
process) running; a part that never finishes meets the deadline, which ends the process
with ``EXIT_STOP_FAILED`` and names the part; ``/readyz`` says 503 from the moment stopping
begins while ``/healthz`` (liveness) still says 200."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from postroute import process
from postroute.config import Settings
from postroute.models import Message
from postroute.process import EXIT_STOP_FAILED, Parts, serve_forever
from postroute.runtime import Runtime
from postroute.smtp.listeners import SmtpServer
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.smtp.conftest import HOST
from tests.support.processes import Processes, alive, refuses
from tests.support.relay import RecordingRelay, closed_port

CUT_SHORT = b"From: shop@example.com\r\nTo: customer@example.org\r\nSubject: cut\r\n\r\nHalf a"


@pytest.fixture
def processes(runtime: Runtime, tmp_path: Path) -> Iterator[Processes]:
    """Processes on the test's database (emptied first, on PostgreSQL)."""
    with Processes(runtime.settings, tmp_path) as started:
        yield started


@pytest.fixture
async def mail_setup(client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay) -> None:
    """A default pool on the recording relay; 127.0.0.1 may send without AUTH."""
    await add_pool(client, tenant, relay.port, name="main")
    reply = await client.post("/v1/ip-credentials", json={"cidr": HOST}, headers=tenant.headers)
    assert reply.status_code == 201, reply.text


@pytest.mark.parametrize("command", ["serve", "smtp"])
@pytest.mark.usefixtures("mail_setup")
async def test_sigterm_stops_the_process_whatever_its_smtp_sessions_do(
    command: str, processes: Processes, runtime: Runtime
) -> None:
    """An idle session (greeted, EHLO), a leaked one (connected, never reads its 220, never
    closes) and one in the middle of DATA: SIGTERM still ends the process with 0 (not the
    deadline's status), and the message cut short is not stored."""
    proc = processes.start(command, http=command == "serve", POSTROUTE_SERVE_WORKER_PROCESS="on")
    workers = proc.children()
    assert len(workers) == (1 if command == "serve" else 0)

    idle = smtplib.SMTP(HOST, proc.smtp_port, timeout=10)
    leaked = socket.create_connection((HOST, proc.smtp_port))
    mid_data = smtplib.SMTP(HOST, proc.smtp_port, timeout=10)
    try:
        assert idle.ehlo("idle.example.com")[0] == 250
        assert mid_data.ehlo("app.example.com")[0] == 250
        assert mid_data.mail("shop@example.com")[0] == 250
        assert mid_data.rcpt("customer@example.org")[0] == 250
        assert mid_data.docmd("DATA")[0] == 354
        mid_data.send(CUT_SHORT)  # no end of data

        proc.popen.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(proc.wait)
    finally:
        for client in (idle, mid_data):
            client.close()
        leaked.close()

    assert status == 0, proc.output
    assert refuses(proc.smtp_port) and refuses(proc.smtps_port)
    if command == "serve":
        assert refuses(proc.http_port)
        assert not any(alive(pid) for pid in workers)
    async with runtime.sessions() as session:
        stored = await session.scalar(sa.select(sa.func.count()).select_from(Message))
    assert stored == 0, "a message cut short in DATA was stored"


@pytest.fixture
def in_process(settings: Settings) -> Settings:
    """Settings for ``serve_forever`` in the test's own process: HTTP and both SMTP
    listeners on free loopback ports."""
    return settings.model_copy(
        update={
            "http_bind": f"{HOST}:{closed_port()}",
            "smtp_bind": f"{HOST}:{closed_port()}",
            "smtps_bind": f"{HOST}:{closed_port()}",
            "smtp_hostname": "mx.postroute.test",
        }
    )


@dataclass(frozen=True)
class Serving:
    task: asyncio.Task[int]  # serve_forever
    url: str
    port: int


@pytest.fixture
async def running(in_process: Settings) -> AsyncIterator[Callable[[Parts], Awaitable[Serving]]]:
    """Start ``serve_forever`` as a task of this test, returned once /healthz answers 200;
    cancelled at the end if it is still running."""
    tasks: list[asyncio.Task[int]] = []

    async def start(parts: Parts) -> Serving:
        task = asyncio.create_task(serve_forever(in_process, parts))
        tasks.append(task)
        port = int(in_process.http_bind.rsplit(":", 1)[1])
        serving = Serving(task, f"http://{HOST}:{port}", port)
        async with httpx.AsyncClient(base_url=serving.url) as http:
            for _ in range(1200):
                assert not task.done(), task.result()
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return serving
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("serve_forever did not answer /healthz")

    yield start
    for task in tasks:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def stop_serving() -> None:
    """SIGTERM to this process: serve_forever's handler requests the stop."""
    os.kill(os.getpid(), signal.SIGTERM)


async def test_a_part_that_fails_to_stop_does_not_keep_the_others_running(
    running: Callable[[Parts], Awaitable[Serving]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SMTP listeners' stop raises (an injected fault): the HTTP server and the worker
    still stop, the database is closed, and serve_forever returns ``EXIT_STOP_FAILED``
    with the part named in the log."""
    broken: list[SmtpServer] = []
    real_stop = SmtpServer.stop

    async def failing_stop(self: SmtpServer, grace: float = 10.0) -> None:
        broken.append(self)
        raise RuntimeError("injected: the listeners cannot stop")

    monkeypatch.setattr(SmtpServer, "stop", failing_stop)
    serve = await running(Parts(api=True, worker=True, smtp=True))
    serving = [t for t in asyncio.all_tasks() if t.get_name() in ("http", "worker")]
    assert len(serving) == 2

    stop_serving()
    try:
        status = await asyncio.wait_for(serve.task, 60)
    finally:
        for server in broken:  # closes the listeners the fault left open
            await real_stop(server)

    assert status == EXIT_STOP_FAILED
    assert all(t.done() for t in serving)
    assert refuses(serve.port)
    failed = [r for r in caplog.records if "failed to stop" in r.getMessage()]
    assert [r.getMessage() for r in failed] == [
        "stopping: the SMTP listeners failed to stop; stopping the rest",
        "stopped; failed to stop: SMTP listeners",
    ]


async def test_readyz_is_503_from_the_moment_stopping_begins(
    running: Callable[[Parts], Awaitable[Serving]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first part to stop (the SMTP listeners) waits until the test has looked:
    by then /readyz says 503 (not ready: stopping) and /healthz still 200 (alive)."""
    began, go_on = asyncio.Event(), asyncio.Event()
    real_stop = SmtpServer.stop

    async def slow_stop(self: SmtpServer, grace: float = 10.0) -> None:
        began.set()
        await go_on.wait()
        await real_stop(self, grace)

    monkeypatch.setattr(SmtpServer, "stop", slow_stop)
    serve = await running(Parts(api=True, worker=False, smtp=True))
    async with httpx.AsyncClient(base_url=serve.url) as http:
        assert (await http.get("/readyz")).status_code == 200

        stop_serving()
        await asyncio.wait_for(began.wait(), 30)
        ready, live = await http.get("/readyz"), await http.get("/healthz")
        go_on.set()
    status = await asyncio.wait_for(serve.task, 60)

    assert ready.status_code == 503, ready.text
    assert live.status_code == 200, live.text
    assert status == 0


HANG = """
import asyncio, sys, time
from postroute import process
from postroute.delivery.worker import Worker
from postroute.smtp.listeners import SmtpServer

async def never(self, *args, **kwargs):  # a stop that never finishes
    await asyncio.Event().wait()

async def blocks(self, *args, **kwargs):  # one that blocks the event loop itself
    time.sleep(3600)

process.STOP_DEADLINE = 3.0
{patch}
sys.argv = ["postroute", sys.argv[1]]
from postroute.cli import main
main()
"""


@pytest.mark.parametrize(
    ("patch", "hung"),
    [("SmtpServer.stop = never", process.SMTP), ("Worker.stop = blocks", process.WORKER)],
    ids=["awaits-forever", "blocks-the-loop"],
)
async def test_a_stop_that_hangs_ends_the_process_at_the_deadline(
    patch: str, hung: str, processes: Processes
) -> None:
    """``serve`` whose one part never finishes stopping (patched in by the test's own
    start-up snippet) exits with ``EXIT_STOP_FAILED`` once ``STOP_DEADLINE`` has passed,
    with one log line naming that part."""
    proc = processes.start(
        "serve", http=True, code=HANG.format(patch=patch), POSTROUTE_SERVE_WORKER_PROCESS="off"
    )
    proc.popen.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(proc.wait)

    assert status == EXIT_STOP_FAILED, proc.output
    lines = [line for line in proc.output.splitlines() if "did not finish" in line]
    assert len(lines) == 1, proc.output
    (line,) = lines
    assert "stopping did not finish in 3 s" in line
    still = line.split("still stopping: ", 1)[1].split(";", 1)[0].split(", ")
    assert hung in still, line
    assert line.endswith(f"exit status {EXIT_STOP_FAILED}")


async def test_the_started_hook_runs_once_every_part_is_up(in_process: Settings) -> None:
    """``serve_forever(started=...)`` (the entry point freezes the heap there) is called
    once, when the HTTP server and the SMTP listeners already take connections."""
    ports = [int(b.rsplit(":", 1)[1]) for b in (in_process.http_bind, in_process.smtp_bind)]
    up: list[bool] = []

    def started() -> None:
        for port in ports:
            socket.create_connection((HOST, port), timeout=5).close()
        up.append(True)

    parts = Parts(api=True, worker=False, smtp=True)
    task = asyncio.create_task(serve_forever(in_process, parts, started=started))
    for _ in range(1200):
        if up:
            break
        assert not task.done(), task.result()
        await asyncio.sleep(0.05)
    assert up == [True]
    stop_serving()
    assert await task == 0
    assert up == [True]
