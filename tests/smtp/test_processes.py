"""The SMTP listeners as the command line runs them: ``postroute smtp`` and the listener
inside ``postroute serve``, each a real subprocess on loopback ports, submitted to with
smtplib (an IP credential without AUTH; STARTTLS + AUTH with an API key against the
self-signed certificate in the data dir). And a 250 is a commit: a ``postroute smtp``
killed with SIGKILL right after the 250 (no graceful stop, no group committer drained at
shutdown) leaves the message and its queue row in the database, and a worker delivers it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from postroute.models import Message
from postroute.models.queue import Delivery
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.smtp.conftest import BASIC, HOST, deliver_after_restart, queued_id
from tests.support.relay import RecordingRelay, closed_port

START_TIMEOUT = 30.0


@dataclass
class Process:
    """A ``python -m postroute ...`` subprocess and where it listens."""

    popen: subprocess.Popen[bytes]
    output_file: Path
    data_dir: Path
    smtp_port: int
    smtps_port: int
    http_port: int

    @property
    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def client_tls(self) -> ssl.SSLContext:
        """A client context trusting only the self-signed certificate the process made."""
        return ssl.create_default_context(cafile=self.data_dir / "tls" / "smtp-cert.pem")


Start = Callable[..., Process]


def greeting(port: int) -> bytes | None:
    """The first reply line on ``port``; None while nothing listens there."""
    try:
        with (
            socket.create_connection((HOST, port), timeout=2) as sock,
            sock.makefile("rb") as reader,
        ):
            return reader.readline()
    except OSError:
        return None


def wait_until(check: Callable[[], object], what: str, proc: Process | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"process exited ({proc.popen.returncode}):\n{proc.output}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{proc.output}" if proc else ""))


@pytest.fixture
def start(runtime: Runtime, tmp_path: Path) -> Iterator[Start]:
    """Start ``python -m postroute COMMAND`` on the test's database and free loopback ports,
    once the STARTTLS listener greets with 220 (and, with ``http=True``, /healthz answers).
    Every process is killed (if still running) and waited for at teardown."""
    started: list[tuple[Process, Any]] = []

    def start_process(command: str, *, http: bool = False, **env: str) -> Process:
        name = f"{command}-{len(started)}"
        data_dir = tmp_path / name
        proc_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("POSTROUTE_")},
            "POSTROUTE_DATABASE_URL": runtime.settings.db_url,
            "POSTROUTE_SECRET_KEY": runtime.settings.secret_keys[0],
            "POSTROUTE_DATA_DIR": str(data_dir),
            "POSTROUTE_HTTP_BIND": f"{HOST}:{closed_port()}",
            "POSTROUTE_SMTP_BIND": f"{HOST}:{closed_port()}",
            "POSTROUTE_SMTPS_BIND": f"{HOST}:{closed_port()}",
            "POSTROUTE_SMTP_HOSTNAME": "mx.postroute.test",
            "POSTROUTE_RELAY_CA_FILE": str(runtime.settings.relay_ca_file),
            "POSTROUTE_LOG_LEVEL": "WARNING",
            **env,
        }
        output_file = tmp_path / f"{name}.log"
        output = output_file.open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "postroute", command],
            env=proc_env,
            cwd=tmp_path,  # no stray .env is read
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        proc = Process(
            popen,
            output_file,
            data_dir,
            smtp_port=int(proc_env["POSTROUTE_SMTP_BIND"].rsplit(":", 1)[1]),
            smtps_port=int(proc_env["POSTROUTE_SMTPS_BIND"].rsplit(":", 1)[1]),
            http_port=int(proc_env["POSTROUTE_HTTP_BIND"].rsplit(":", 1)[1]),
        )
        started.append((proc, output))
        wait_until(
            lambda: greeting(proc.smtp_port) == b"220 mx.postroute.test ESMTP Postroute\r\n",
            "the 220 greeting",
            proc,
        )
        if http:

            def healthy() -> bool:
                try:
                    return httpx.get(f"{proc.url}/healthz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(healthy, "/healthz", proc)
        return proc

    try:
        yield start_process
    finally:
        for proc, output in started:
            try:
                if proc.popen.poll() is None:
                    proc.popen.kill()
                proc.popen.wait(30)
            finally:
                output.close()


@pytest.fixture
async def pool(client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay) -> dict[str, Any]:
    """The tenant's default pool, relaying to the recording relay (before any process
    starts, so its first message finds it)."""
    return await add_pool(client, tenant, relay.port, name="main")


@pytest.fixture
async def ip_credential(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    """127.0.0.1 may send without AUTH for the tenant."""
    reply = await client.post("/v1/ip-credentials", json={"cidr": HOST}, headers=tenant.headers)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def send_without_auth(port: int, *, then: Callable[[], object] = lambda: None) -> tuple[int, bytes]:
    """One message in plain text, no AUTH; ``then`` runs right after the DATA reply,
    before anything else is said on the connection."""
    smtp = smtplib.SMTP(HOST, port, timeout=10)
    try:
        smtp.ehlo("app.example.com")
        code, text = smtp.mail("shop@example.com")
        assert code == 250, text
        code, text = smtp.rcpt("customer@example.org")
        assert code == 250, text
        reply = smtp.data(BASIC)
        then()
        return reply
    finally:
        smtp.close()


def send_with_starttls_and_auth(
    port: int, tls: ssl.SSLContext, key: str
) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """(MAIL's reply before AUTH, the DATA reply after STARTTLS + AUTH PLAIN)."""
    with smtplib.SMTP(HOST, port, timeout=10) as smtp:
        smtp.ehlo("app.example.com")
        assert smtp.has_extn("starttls") and not smtp.has_extn("auth")
        refused = smtp.mail("shop@example.com")
        smtp.rset()
        smtp.starttls(context=tls)  # verifies the certificate for 127.0.0.1
        smtp.ehlo("app.example.com")
        assert "PLAIN" in smtp.esmtp_features["auth"].split()
        assert smtp.login("apikey", key)[0] == 235
        assert smtp.mail("shop@example.com")[0] == 250
        assert smtp.rcpt("customer@example.org")[0] == 250
        return refused, smtp.data(BASIC)


async def stored(client: httpx.AsyncClient, tenant: Tenant, message_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    body = dict(reply.json())
    assert body["id"] == message_id
    return body


@pytest.mark.usefixtures("pool", "ip_credential")
async def test_smtp_command_accepts_mail_from_an_ip_credential(
    start: Start, client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay
) -> None:
    proc = start("smtp")
    code, text = await asyncio.to_thread(send_without_auth, proc.smtp_port)

    assert code == 250, text
    assert text.startswith(b"2.0.0 Message queued as msg_")
    message = await stored(client, tenant, queued_id(text))
    assert message["source"] == "smtp"
    assert (message["from"], message["to"]) == ("shop@example.com", "customer@example.org")
    assert message["subject"] == "Your order"
    assert relay.messages == []  # `postroute smtp` runs no worker
    assert proc.popen.poll() is None


@pytest.mark.usefixtures("pool")
async def test_smtp_command_accepts_mail_over_starttls_with_an_api_key(
    start: Start, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    proc = start("smtp")
    refused, (code, text) = await asyncio.to_thread(
        send_with_starttls_and_auth, proc.smtp_port, proc.client_tls(), tenant.key
    )

    assert refused[0] == 530, refused  # no IP credential: no open relay
    assert code == 250, text
    message = await stored(client, tenant, queued_id(text))
    assert message["source"] == "smtp"
    assert message["to"] == "customer@example.org"


@pytest.mark.parametrize("worker_process", ["on", "off"])
@pytest.mark.usefixtures("pool", "ip_credential")
async def test_serve_accepts_smtp_and_delivers_it(
    worker_process: str, start: Start, tenant: Tenant, relay: RecordingRelay
) -> None:
    proc = start(
        "serve",
        http=True,
        POSTROUTE_SERVE_WORKER_PROCESS=worker_process,
        POSTROUTE_WORKER_POLL_SECONDS="30",  # a delivery within seconds: SMTP woke the worker
    )
    code, text = await asyncio.to_thread(send_without_auth, proc.smtp_port)
    assert code == 250, text
    message_id = queued_id(text)
    tls = proc.client_tls()
    _, (code, text) = await asyncio.to_thread(
        send_with_starttls_and_auth, proc.smtp_port, tls, tenant.key
    )
    assert code == 250, text
    second_id = queued_id(text)

    received = await relay.wait_for_async(2, timeout=10)
    assert sorted(m.parsed()["X-Postroute-Message-ID"] for m in received) == sorted(
        [message_id, second_id]
    )
    async with httpx.AsyncClient(base_url=proc.url, headers=tenant.headers) as http:
        for sent_id in (message_id, second_id):

            async def status(sent_id: str = sent_id) -> str:
                reply = await http.get(f"/v1/messages/{sent_id}")
                assert reply.status_code == 200, reply.text
                assert reply.json()["id"] == sent_id
                return str(reply.json()["status"])

            deadline = time.monotonic() + 10
            while await status() != "sent":
                assert time.monotonic() < deadline, await status()
                await asyncio.sleep(0.05)

    proc.popen.send_signal(signal.SIGTERM)  # listeners, API and worker stop cleanly
    assert await asyncio.to_thread(proc.popen.wait, 60) == 0, proc.output


@pytest.mark.usefixtures("pool", "ip_credential")
async def test_a_250_survives_sigkill_right_after_it(
    start: Start,
    runtime: Runtime,
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
) -> None:
    proc = start("smtp")
    code, text = await asyncio.to_thread(send_without_auth, proc.smtp_port, then=proc.popen.kill)
    assert code == 250, (text, proc.output)
    assert await asyncio.to_thread(proc.popen.wait, 30) == -signal.SIGKILL, proc.output
    message_id = queued_id(text)

    async with runtime.sessions() as session:
        message = await session.get(Message, message_id)
        queued = await session.get(Delivery, message_id)
    lost = f"250 {text!r}, then SIGKILL: {{}} missing; process output:\n{proc.output}"
    assert message is not None, lost.format("the message")
    assert queued is not None, lost.format("its queue row")
    assert message.source == "smtp" and message.to_email == "customer@example.org"
    assert (queued.state, queued.attempts, queued.lease_owner) == ("queued", 0, None)
    assert (await stored(client, tenant, message_id))["status"] == "queued"
    assert relay.messages == []

    # a real clock: the row is due now
    received = await deliver_after_restart(
        runtime.settings, relay, tenant, message_id, "after-sigkill"
    )
    assert list(received.rcpt_tos) == ["customer@example.org"]


@pytest.mark.usefixtures("pool")
async def test_sigterm_stops_serve_with_sessions_open_and_clients_gone(start: Start) -> None:
    """The issue's reproduction: a client that closed before its greeting, another that
    sits idle; SIGTERM stops ``serve`` (exit 0), and the idle one is told 421 first."""
    proc = start("serve", http=True, POSTROUTE_SERVE_WORKER_PROCESS="off")
    socket.create_connection((HOST, proc.smtp_port)).close()  # before its greeting
    with (
        socket.create_connection((HOST, proc.smtp_port), timeout=30) as idle,
        idle.makefile("rb") as replies,
    ):
        # accepted after the early one (in order): that one has its session too by now
        assert replies.readline().startswith(b"220 ")
        proc.popen.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.popen.wait, 60) == 0, proc.output
        assert replies.readline().startswith(b"421 4.3.2 ")
        assert replies.readline() == b""
    assert "Traceback" not in proc.output, proc.output
