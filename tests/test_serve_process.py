"""``postroute serve`` with the delivery worker in a child process (several CPUs)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from postroute.api.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.support.relay import RecordingRelay, closed_port


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until(check: Callable[[], object], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def serve(runtime: Runtime, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = closed_port()
    env = {
        **os.environ,
        "POSTROUTE_DATABASE_URL": runtime.settings.db_url,
        "POSTROUTE_SECRET_KEY": runtime.settings.secret_keys[0],
        "POSTROUTE_DATA_DIR": str(tmp_path / "serve"),
        "POSTROUTE_HTTP_BIND": f"127.0.0.1:{port}",
        "POSTROUTE_SMTP_BIND": f"127.0.0.1:{closed_port()}",
        "POSTROUTE_SMTPS_BIND": f"127.0.0.1:{closed_port()}",
        "POSTROUTE_SERVE_WORKER_PROCESS": "on",
        "POSTROUTE_WORKER_POLL_SECONDS": "30",  # so a delivery within seconds was woken
        "POSTROUTE_RELAY_CA_FILE": str(runtime.settings.relay_ca_file),
        "POSTROUTE_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "postroute", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


async def test_serve_delivers_through_a_worker_process_that_it_supervises(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    serve: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = serve
    await add_pool(client, tenant, relay.port)
    (worker,) = children(proc.pid)

    assert b"worker" in Path(f"/proc/{worker}/cmdline").read_bytes()

    body = {"from": "shop@example.com", "to": "a@example.org", "subject": "Hi", "text": "x"}
    async with httpx.AsyncClient(base_url=url, headers=tenant.headers) as http:
        assert (await http.post("/v1/send", json=body)).status_code == 202
        # polling every 30 s: arriving now means the API process woke the worker
        await asyncio.to_thread(relay.wait_for, 1, 10)

        os.kill(worker, signal.SIGKILL)  # a crashed worker is started again
        await asyncio.to_thread(wait_until, lambda: not alive(worker))
        await asyncio.to_thread(wait_until, lambda: [p for p in children(proc.pid) if alive(p)])
        (restarted,) = [p for p in children(proc.pid) if alive(p)]
        assert restarted != worker
        # sent before its first claim: taken by it; after: the wake-up handler is set by then
        body["to"] = "b@example.org"
        assert (await http.post("/v1/send", json=body)).status_code == 202
        await asyncio.to_thread(relay.wait_for, 2, 20)

    proc.send_signal(signal.SIGTERM)  # stops the child too, then exits cleanly
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert not alive(restarted)
    assert sorted(r for m in relay.messages for r in m.rcpt_tos) == [
        "a@example.org",
        "b@example.org",
    ]


def test_the_worker_process_stops_when_serve_is_killed(
    serve: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, _ = serve
    wait_until(lambda: children(proc.pid))
    (worker,) = children(proc.pid)
    proc.kill()  # no chance to stop its child
    proc.wait(30)
    wait_until(lambda: not alive(worker), timeout=15)
