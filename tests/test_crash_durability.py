"""A crash loses no acknowledged mail. ``postroute serve`` (and its worker child: a crash of
the machine) is killed with SIGKILL under HTTP and SMTP load, three times, and started
again each time on the same data directory, with a recording relay as the pool. In the
end every message that got its 202 or its 250 has reached the relay; a message reached
it more than once only if it was in flight at a kill (the relay had it, its outcome was
not yet written), and then each delivery shows in its timeline (``delivery_attempts``).

Slow (about half a minute): leases are short (``POSTROUTE_LEASE_SECONDS``) so that those
of the killed worker expire soon, and outcomes are gathered for half a second before
they are written, so that a kill right after the relay accepted a message finds it in
flight.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from postroute.models import Message
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.smtp.conftest import BASIC, HOST, queued_id
from tests.support.processes import Process, Processes
from tests.support.relay import RecordingRelay

KILLS = 3
HTTP_SENDERS, SMTP_SENDERS = 4, 2
PER_ROUND = 20  # acknowledged messages per ingress before the kill (at least)
ENV = {
    "POSTROUTE_SERVE_WORKER_PROCESS": "on",
    "POSTROUTE_LEASE_SECONDS": "5",
    "POSTROUTE_WORKER_RECORD_SECONDS": "0.5",
    "POSTROUTE_RETRY_BASE_SECONDS": "1",
}
TIMEOUT = 60.0


@pytest.fixture
def processes(runtime: Runtime, tmp_path: Path) -> Iterator[Processes]:
    """Processes on the test's database (emptied first, on PostgreSQL)."""
    with Processes(runtime.settings, tmp_path) as started:
        yield started


class Load:
    """HTTP and SMTP clients sending to one process until it dies (or ``stop`` is set);
    ``acked`` holds the id of every message that got its 202 or its 250, by ingress."""

    def __init__(self, proc: Process, tenant: Tenant) -> None:
        self.proc = proc
        self.tenant = tenant
        self.stop = threading.Event()
        self.acked: dict[str, set[str]] = {"http": set(), "smtp": set()}

    async def run(self) -> None:
        senders = [self._http(n) for n in range(HTTP_SENDERS)]
        senders += [asyncio.to_thread(self._smtp) for _ in range(SMTP_SENDERS)]
        await asyncio.gather(*senders)

    async def _http(self, n: int) -> None:
        headers = self.tenant.headers
        async with httpx.AsyncClient(base_url=self.proc.url, headers=headers, timeout=10) as http:
            i = 0
            while not self.stop.is_set():
                body = {"from": "shop@example.com", "to": f"h{n}-{i}@example.org"}
                body |= {"subject": "Load", "text": "Sent over HTTP."}
                try:
                    reply = await http.post("/v1/send", json=body)
                except httpx.TransportError:  # killed: no answer, not acknowledged
                    return
                assert reply.status_code == 202, reply.text
                self.acked["http"].update(m["id"] for m in reply.json()["messages"])
                i += 1

    def _smtp(self) -> None:
        while not self.stop.is_set():
            try:
                self._smtp_session()
            except (OSError, smtplib.SMTPException):  # killed
                return

    def _smtp_session(self) -> None:
        """Messages on one connection, until the server wants a new one (421)."""
        smtp = smtplib.SMTP(HOST, self.proc.smtp_port, timeout=10)
        try:
            smtp.ehlo("app.example.com")
            while not self.stop.is_set():
                code, text = smtp.mail("shop@example.com")
                if code == 421:
                    return
                assert code == 250, text
                assert smtp.rcpt("customer@example.org")[0] == 250
                code, text = smtp.data(BASIC)
                assert code == 250, text
                self.acked["smtp"].add(queued_id(text))
        finally:
            smtp.close()


def delivered(relay: RecordingRelay) -> Counter[str]:
    """How many times the relay accepted each message."""
    return Counter(str(m.parsed()["X-Postroute-Message-ID"]) for m in relay.messages)


async def statuses(runtime: Runtime, ids: set[str]) -> dict[str, str]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            sa.select(Message.id, Message.status).where(Message.id.in_(ids))
        )
    return {message_id: status for message_id, status in rows}


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(int(TIMEOUT / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_acknowledged_mail_survives_kill_9_under_load(
    processes: Processes,
    runtime: Runtime,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    tmp_path: Path,
) -> None:
    await add_pool(client, tenant, relay.port, name="main")
    reply = await client.post("/v1/ip-credentials", json={"cidr": HOST}, headers=tenant.headers)
    assert reply.status_code == 201, reply.text
    data_dir = tmp_path / "serve"
    acked: set[str] = set()
    in_flight: list[set[str]] = []  # per kill: at the relay, outcome not written

    for _ in range(KILLS):
        proc = processes.start("serve", http=True, data_dir=data_dir, **ENV)
        load = Load(proc, tenant)
        running = asyncio.create_task(load.run())

        async def enough(load: Load = load, running: asyncio.Task[None] = running) -> bool:
            if running.done():
                running.result()  # a sender failed: its assertion
                raise AssertionError(f"the load stopped by itself:\n{load.proc.output}")
            return all(len(ids) >= PER_ROUND for ids in load.acked.values())

        await eventually(enough, "acknowledged messages")
        # right after the relay accepts one: its outcome waits to be written
        await relay.wait_for_async(len(relay.messages) + 1, timeout=TIMEOUT)
        proc.kill_all()
        load.stop.set()
        await asyncio.wait_for(running, TIMEOUT)
        await relay.wait_idle_async(timeout=TIMEOUT)
        acked |= load.acked["http"] | load.acked["smtp"]
        at_relay = set(delivered(relay))
        found = await statuses(runtime, at_relay)
        in_flight.append({m for m in at_relay if found[m] != "sent"})

    final = processes.start("serve", http=True, data_dir=data_dir, **ENV)

    async def all_sent() -> bool:
        sent = delivered(relay)
        if not acked <= set(sent):
            return False
        found = await statuses(runtime, set(sent))
        return all(status == "sent" for status in found.values())

    await eventually(all_sent, "every acknowledged message to be delivered and recorded")

    counts = delivered(relay)
    assert acked <= set(counts), f"lost: {sorted(acked - set(counts))}"
    twice = {m: n for m, n in counts.items() if n > 1}
    assert any(in_flight), "no kill found a message in flight: nothing was tested"
    for message_id, times in twice.items():
        kills = sum(message_id in found for found in in_flight)
        assert times - 1 <= kills, (message_id, times, in_flight)
        reply = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
        attempts = reply.json()["delivery_attempts"]
        assert len(attempts) >= times, (message_id, times, attempts)
        assert "unknown_outcome" in [a["outcome"] for a in attempts], attempts

    final.popen.terminate()
    assert await asyncio.to_thread(final.wait) == 0, final.output
