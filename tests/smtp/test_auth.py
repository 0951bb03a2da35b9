"""Who may send: AUTH only over TLS, API keys as passwords, 530 without AUTH unless an IP
credential covers the client, 535 for a wrong key, wrong keys slowed (never the right
one), and TLS 1.2 as the floor."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
import warnings
from typing import Any

import httpx
import pytest

from postroute.db import create_engine, session_factory
from postroute.kit.clock import FakeClock
from postroute.kit.guard import AuthGuard
from postroute.runtime import Runtime
from postroute.smtp import replies
from tests.conftest import Tenant, make_tenant
from tests.kit.test_guard import Waits
from tests.smtp.conftest import BASIC, HOST, Ports, RawClient, queued_id
from tests.support.fixtures import RelayCA


def plain(key: str, user: str = "user") -> str:
    return base64.b64encode(f"\0{user}\0{key}".encode()).decode()


def mail_without_auth(port: int, tls: ssl.SSLContext | None) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.ehlo()
        if tls is not None:
            smtp.starttls(context=tls)
            smtp.ehlo()
        return smtp.mail("shop@example.com")


async def test_mail_without_auth_is_530(ports: Ports, client_tls: ssl.SSLContext) -> None:
    for tls in (None, client_tls):
        code, text = await asyncio.to_thread(mail_without_auth, ports.starttls, tls)
        assert (code, text) == (530, replies.S530_AUTH_REQUIRED.message)


def implicit_mail_without_auth(port: int, tls: ssl.SSLContext) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL(HOST, port, context=tls, timeout=5) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]  # offered, not used
        return smtp.mail("shop@example.com")


async def test_mail_without_auth_on_implicit_tls_is_530(
    ports: Ports, client_tls: ssl.SSLContext
) -> None:
    code, text = await asyncio.to_thread(implicit_mail_without_auth, ports.implicit, client_tls)
    assert (code, text) == (530, replies.S530_AUTH_REQUIRED.message)


async def test_auth_not_offered_nor_accepted_before_starttls(
    ports: Ports, tenant: Tenant, raw_clients: list[RawClient]
) -> None:
    raw = await RawClient.connect(ports.starttls)
    raw_clients.append(raw)
    code, text = await raw.command("EHLO app.example.com")
    assert code == 250
    keywords = text.split("\n")[1:]
    assert keywords == [
        f"SIZE {25 * 1024 * 1024}",
        "8BITMIME",
        "SMTPUTF8",
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ]
    code, text = await raw.command(f"AUTH PLAIN {plain(tenant.key)}")
    assert code == 538 and text.startswith("5.7.11 ")


def login(port: int, tls: ssl.SSLContext, key: str) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL(HOST, port, context=tls, timeout=5) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = "user", key
        try:  # one mechanism: smtplib's login() would try PLAIN, then LOGIN
            return smtp.auth("PLAIN", smtp.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            error = exc.smtp_error
            return exc.smtp_code, error if isinstance(error, bytes) else error.encode()
        except smtplib.SMTPServerDisconnected:
            return 0, b"disconnected"


@pytest.fixture
def smtp_overrides() -> dict[str, Any]:
    return {"auth_failures_per_source": 3}


@pytest.fixture
def waits(runtime: Runtime) -> Waits:
    """The runtime's auth guard, with its waits recorded instead of slept."""
    waits = Waits()
    s = runtime.settings
    runtime.guard = AuthGuard(
        per_source=s.auth_failures_per_source,
        global_limit=s.auth_failures_global,
        slow=s.auth_slow_seconds,
        slow_max=s.auth_slow_max_seconds,
        clock=runtime.clock,
        sleep=waits,
    )
    return waits


async def test_wrong_keys_are_535_then_slowed_but_the_right_key_still_works(
    ports: Ports,
    client_tls: ssl.SSLContext,
    tenant: Tenant,
    clock: FakeClock,
    waits: Waits,
    runtime: Runtime,
) -> None:
    """A NAT shared by a guesser (or a misconfigured app) and a good app: the wrong keys
    get 535 and slow that address down; the right key is accepted, never refused."""
    for key in ("pr_live_wrong", "not-even-a-key", tenant.key + "x"):
        code, text = await asyncio.to_thread(login, ports.implicit, client_tls, key)
        assert (code, text) == (535, replies.S535_AUTH_INVALID.message)
    assert waits.delays == []
    code, text = await asyncio.to_thread(login, ports.implicit, client_tls, "pr_live_more")
    assert (code, text) == (535, replies.S535_AUTH_INVALID.message)
    assert waits.delays == [runtime.settings.auth_slow_seconds]  # checked slowly

    code, _ = await asyncio.to_thread(login, ports.implicit, client_tls, tenant.key)
    assert code == 235  # slowed once (unknown to this process yet), not refused
    slowed = len(waits.delays)
    code, _ = await asyncio.to_thread(login, ports.implicit, client_tls, tenant.key)
    assert code == 235 and len(waits.delays) == slowed  # known good: at once

    clock.advance(61)  # the window has passed
    assert runtime.guard.failures(HOST) == 0


def smtplib_login(port: int, tls: ssl.SSLContext, key: str) -> int:
    with smtplib.SMTP_SSL(HOST, port, context=tls, timeout=5) as smtp:
        try:
            smtp.login("user", key)  # PLAIN, then LOGIN when PLAIN fails
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code
        return 235


async def test_a_stale_key_retried_is_one_failure(
    ports: Ports, client_tls: ssl.SSLContext, tenant: Tenant, waits: Waits, runtime: Runtime
) -> None:
    """smtplib's login() spends two attempts per call; an app retrying a stale key is not
    guessing: the same wrong key counts once, and the source is never slowed for it."""
    for _ in range(5):
        assert (
            await asyncio.to_thread(smtplib_login, ports.implicit, client_tls, "pr_live_old") == 535
        )
    assert runtime.guard.failures(HOST) == 1
    assert waits.delays == []
    assert await asyncio.to_thread(smtplib_login, ports.implicit, client_tls, tenant.key) == 235


async def test_revoked_key_is_535(
    ports: Ports, client_tls: ssl.SSLContext, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    keys = (await client.get("/v1/api-keys", headers=tenant.headers)).json()["data"]
    assert await asyncio.to_thread(login, ports.implicit, client_tls, tenant.key) == (
        235,
        b"2.7.0 Authentication successful",
    )
    await client.delete(f"/v1/api-keys/{keys[0]['id']}", headers=tenant.headers)
    code, _ = await asyncio.to_thread(login, ports.implicit, client_tls, tenant.key)
    assert code == 535


def tls_1_1_client(ca: RelayCA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.ca.configure_trust(context)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


REFUSED = ("TLSV1_ALERT_PROTOCOL_VERSION", "UNEXPECTED_EOF_WHILE_READING")


def starttls_with(port: int, context: ssl.SSLContext) -> None:
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.ehlo()
        smtp.starttls(context=context)


def implicit_with(port: int, context: ssl.SSLContext) -> None:
    with smtplib.SMTP_SSL(HOST, port, context=context, timeout=5) as smtp:
        smtp.ehlo()


async def test_tls_1_1_client_fails_on_both_listeners(
    ports: Ports, relay_ca: RelayCA, client_tls: ssl.SSLContext
) -> None:
    old = tls_1_1_client(relay_ca)
    with pytest.raises(ssl.SSLError) as starttls:
        await asyncio.to_thread(starttls_with, ports.starttls, old)
    with pytest.raises(ssl.SSLError) as implicit:
        await asyncio.to_thread(implicit_with, ports.implicit, old)
    for failure in (starttls, implicit):
        # The server refused the handshake (an alert, or asyncio closing before sending
        # it); a client that could not offer TLS 1.1 would fail with NO_PROTOCOLS_AVAILABLE.
        assert failure.value.reason in REFUSED, failure.value
    await asyncio.to_thread(starttls_with, ports.starttls, client_tls)
    await asyncio.to_thread(implicit_with, ports.implicit, client_tls)


def send_plain(port: int, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, port, timeout=5) as smtp:
        smtp.ehlo()
        code, text = smtp.mail("shop@example.com")
        if code != 250:
            return code, text
        smtp.rcpt("customer@example.org")
        return smtp.data(raw)


async def test_ip_credential_sends_without_auth_or_tls_for_its_account(
    ports: Ports,
    client: httpx.AsyncClient,
    runtime: Runtime,
    tenant: Tenant,
    relay_pool: dict[str, Any],
    loopback_credential: dict[str, Any],
) -> None:
    other = await make_tenant(runtime, "globex")
    code, text = await asyncio.to_thread(send_plain, ports.starttls, BASIC)
    assert code == 250, text
    message_id = queued_id(text)
    assert (await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)).is_success
    foreign = await client.get(f"/v1/messages/{message_id}", headers=other.headers)
    assert foreign.status_code == 404

    # Removed: the next connection needs AUTH again.
    path = f"/v1/ip-credentials/{loopback_credential['id']}"
    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    code, text = await asyncio.to_thread(send_plain, ports.starttls, BASIC)
    assert (code, text) == (530, replies.S530_AUTH_REQUIRED.message)


async def test_auth_with_the_database_unavailable_is_454(
    ports: Ports,
    client_tls: ssl.SSLContext,
    runtime: Runtime,
    tenant: Tenant,
    closed_port: int,
    raw_clients: list[RawClient],
) -> None:
    reader, writer = await asyncio.open_connection(HOST, ports.implicit, ssl=client_tls)
    raw = RawClient(reader, writer)
    raw_clients.append(raw)
    assert (await raw.reply())[0] == 220
    assert (await raw.command("EHLO app.example.com"))[0] == 250
    # The key cannot be looked up: a real, unreachable database server.
    healthy = runtime.sessions
    dead = create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{closed_port}/postroute")
    runtime.sessions = session_factory(dead)
    try:
        # As many attempts as the module's failure limit (smtp_overrides): none is a 421.
        attempts = [await raw.command(f"AUTH PLAIN {plain(tenant.key)}") for _ in range(3)]
    finally:
        runtime.sessions = healthy
        await dead.dispose()
    assert attempts == [(454, replies.S454_AUTH_TEMPFAIL.message.decode())] * 3
    assert attempts[0][1] == "4.7.0 Temporary authentication failure, try again later"
    # Not authenticated, not counted as a wrong key: the session goes on.
    assert await raw.command("MAIL FROM:<shop@example.com>") == (
        530,
        replies.S530_AUTH_REQUIRED.message.decode(),
    )
    assert await raw.command("QUIT") == (221, replies.S221_BYE.message.decode())
    assert await raw.closed()
    # The database is back: the same key works (no 454 counted as a failure for the IP).
    code, _ = await asyncio.to_thread(login, ports.implicit, client_tls, tenant.key)
    assert code == 235
