"""``postroute serve`` with the delivery worker in a child process (several CPUs)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from postroute.process import EXIT_STOP_FAILED, WORKER_PROCESS
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.support.processes import Process, Processes, alive, refuses, wait_until
from tests.support.relay import RecordingRelay


@pytest.fixture
def processes(runtime: Runtime, tmp_path: Path) -> Iterator[Processes]:
    """Processes on the test's database (emptied first, on PostgreSQL)."""
    with Processes(runtime.settings, tmp_path) as started:
        yield started


@pytest.fixture
def serve(processes: Processes) -> Process:
    return processes.start(
        "serve",
        http=True,
        POSTROUTE_SERVE_WORKER_PROCESS="on",
        POSTROUTE_WORKER_POLL_SECONDS="30",  # so a delivery within seconds was woken
    )


async def test_serve_delivers_through_a_worker_process_that_it_supervises(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, serve: Process
) -> None:
    await add_pool(client, tenant, relay.port)
    (worker,) = serve.children()

    assert b"worker" in Path(f"/proc/{worker}/cmdline").read_bytes()

    body = {"from": "shop@example.com", "to": "a@example.org", "subject": "Hi", "text": "x"}
    async with httpx.AsyncClient(base_url=serve.url, headers=tenant.headers) as http:
        assert (await http.post("/v1/send", json=body)).status_code == 202
        # polling every 30 s: arriving now means the API process woke the worker
        await asyncio.to_thread(relay.wait_for, 1, 10)

        os.kill(worker, signal.SIGKILL)  # a crashed worker is started again
        await asyncio.to_thread(wait_until, lambda: not alive(worker), "the worker to die")
        await asyncio.to_thread(wait_until, serve.children, "a new worker")
        (restarted,) = serve.children()
        assert restarted != worker
        # sent before its first claim: taken by it; after: the wake-up handler is set by then
        body["to"] = "b@example.org"
        assert (await http.post("/v1/send", json=body)).status_code == 202
        await asyncio.to_thread(relay.wait_for, 2, 20)

    serve.popen.send_signal(signal.SIGTERM)  # stops the child too, then exits cleanly
    assert await asyncio.to_thread(serve.wait) == 0, serve.output
    assert not alive(restarted)
    assert sorted(r for m in relay.messages for r in m.rcpt_tos) == [
        "a@example.org",
        "b@example.org",
    ]


def test_the_worker_process_stops_when_serve_is_killed(serve: Process) -> None:
    (worker,) = serve.children()
    serve.popen.kill()  # no chance to stop its child
    serve.popen.wait(30)
    wait_until(lambda: not alive(worker), "the orphaned worker to stop")


# serve whose worker child ignores SIGTERM (as a worker stuck in a send would), and whose
# grace period is short: the child is killed, and serve says so with its exit status
STUCK_CHILD = """
import subprocess, sys
from postroute import process, worker_process

STUCK = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"

def spawn(self):
    self._child = subprocess.Popen([sys.executable, "-c", STUCK])

worker_process.WorkerProcess._spawn = spawn
process.STOP_GRACE = 0.5
sys.argv = ["postroute", sys.argv[1]]
from postroute.cli import main
main()
"""


def test_a_worker_process_killed_at_the_end_of_its_grace_makes_serve_exit_70(
    processes: Processes,
) -> None:
    proc = processes.start(
        "serve", http=True, code=STUCK_CHILD, POSTROUTE_SERVE_WORKER_PROCESS="on"
    )
    (child,) = proc.children()
    proc.popen.send_signal(signal.SIGTERM)

    assert proc.wait() == EXIT_STOP_FAILED, proc.output
    assert not alive(child)
    assert refuses(proc.http_port) and refuses(proc.smtp_port)
    assert (
        f"the {WORKER_PROCESS} did not stop cleanly: it exited with status -{signal.SIGKILL}"
        in proc.output
    )


async def test_serve_with_two_worker_processes_shares_the_queue_and_stops_both(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, processes: Processes
) -> None:
    """POSTROUTE_SERVE_WORKERS=2: two children, each claiming on its own (every message
    delivered once, whoever took it); SIGTERM stops both, and serve exits 0."""
    await add_pool(client, tenant, relay.port)
    serve = processes.start(
        "serve", http=True, POSTROUTE_SERVE_WORKER_PROCESS="on", POSTROUTE_SERVE_WORKERS="2"
    )
    workers = serve.children()
    assert len(workers) == 2 and all(b"worker" in cmdline(pid) for pid in workers)

    to = [f"r{n}@example.org" for n in range(40)]
    body = {"from": "shop@example.com", "to": to, "subject": "Hi", "text": "x"}
    async with httpx.AsyncClient(base_url=serve.url, headers=tenant.headers) as http:
        assert (await http.post("/v1/send", json=body)).status_code == 202
    await asyncio.to_thread(relay.wait_for, 40, 20)

    serve.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(serve.wait) == 0, serve.output
    assert not any(alive(pid) for pid in workers)
    assert sorted(r for m in relay.messages for r in m.rcpt_tos) == sorted(to)


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()
