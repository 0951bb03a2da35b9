"""Relay credentials never come back out of Postroute, whatever a relay quotes back.

The relay here answers a failed AUTH with the credentials it was sent, as given and in
base64 (the password, the AUTH PLAIN string), as some relays do. The pool test (API and
CLI), the pool's health and a message's delivery attempt show a fixed description of
the refusal instead: neither the password nor its base64 forms, and nothing masked
inside other words (masking a one-letter password used to turn "replied" into
"re***lied", and so gave the password away).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from postroute.cli import app
from postroute.delivery.worker import Worker
from tests.conftest import BACKEND, Tenant, _truncate
from tests.delivery.conftest import EchoingRelay, add_pool, message, secret_forms, send
from tests.support.fixtures import RelayCA

USER = "pool-user"
PASSWORDS = ["p", "5", "relay", "a-long-Relay-passw0rd/with+base64=signs"]


def refused(relay: EchoingRelay) -> str:
    return f"AUTH at 127.0.0.1:{relay.port}: relay refused AUTH (535 5.7.8)"


def echoing(relay_ca: RelayCA) -> EchoingRelay:
    return EchoingRelay(tls="starttls", ca=relay_ca.ca, auth={USER: "the-right-password"})


def assert_clean(text: str, password: str) -> None:
    """Nothing the relay quoted back (the password itself is checked by comparing whole
    texts: "5" or "relay" are in any port number or sentence)."""
    lowered = text.lower()
    assert "echo" not in lowered and "***" not in text, text
    for form in secret_forms(USER, password)[1:]:
        assert form.lower() not in lowered, (form, text)
    if len(password) > 20:
        assert password.lower() not in lowered, text


async def pool_view(client: httpx.AsyncClient, tenant: Tenant, pool_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/smtp-pools/{pool_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


@pytest.mark.parametrize("password", PASSWORDS)
async def test_the_pool_test_and_its_health_never_show_the_credentials(
    client: httpx.AsyncClient, tenant: Tenant, relay_ca: RelayCA, password: str
) -> None:
    with echoing(relay_ca) as relay:
        pool = await add_pool(
            client, tenant, relay.port, encryption="tls", username=USER, password=password
        )
        reply = await client.post(f"/v1/smtp-pools/{pool['id']}/test", headers=tenant.headers)
        assert relay.auth_attempts and not relay.auth_attempts[-1][1]

    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["success"] is False
    assert result["message"] == "The SMTP relay refused authentication"
    assert result["error"] == {"code": "smtp_auth_error", "detail": refused(relay)}
    view = await pool_view(client, tenant, pool["id"])
    assert view["health"]["last_error"] == f"smtp_auth_error: {refused(relay)}"
    for text in (reply.text, json.dumps(view)):
        assert_clean(text, password)


@pytest.mark.parametrize("password", PASSWORDS)
async def test_a_delivery_attempt_never_shows_the_credentials(
    client: httpx.AsyncClient, tenant: Tenant, relay_ca: RelayCA, worker: Worker, password: str
) -> None:
    with echoing(relay_ca) as relay:
        pool = await add_pool(
            client, tenant, relay.port, encryption="tls", username=USER, password=password
        )
        (sent,) = (await send(client, tenant))["messages"]
        await worker.drain()
        assert relay.auth_attempts and relay.messages == []

    detail = await message(client, tenant, sent["id"])
    (attempt,) = detail["delivery_attempts"]
    assert (attempt["outcome"], attempt["error_code"]) == ("relay_down", "smtp_auth_error")
    assert (attempt["reply_code"], attempt["reply_text"]) == (535, refused(relay))
    assert detail["status"] == "deferred"
    assert detail["last_reply"] == f"535 smtp_auth_error: {refused(relay)}"
    assert detail["events"][-1]["data"]["reply"] == detail["last_reply"]
    view = await pool_view(client, tenant, pool["id"])
    assert view["health"]["last_error"] == "smtp_auth_error"
    for text in (json.dumps(detail), json.dumps(view)):
        assert_clean(text, password)


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


@pytest.mark.parametrize("password", PASSWORDS)
def test_postroute_pools_test_never_shows_the_credentials(
    database_url: str,
    tmp_path: Path,
    relay_ca: RelayCA,
    monkeypatch: pytest.MonkeyPatch,
    password: str,
) -> None:
    if BACKEND != "sqlite":
        asyncio.run(_truncate(database_url))
    monkeypatch.setenv("POSTROUTE_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.setenv("POSTROUTE_DATABASE_URL", database_url)
    monkeypatch.setenv("POSTROUTE_RELAY_CA_FILE", str(relay_ca.ca_file))
    monkeypatch.setenv("POSTROUTE_SMTP_TIMEOUT_SECONDS", "3")
    monkeypatch.delenv("POSTROUTE_SECRET_KEY", raising=False)
    cli("init")
    with echoing(relay_ca) as relay:
        port = str(relay.port)
        add = ["--host", "127.0.0.1", "--port", port, "--username", USER, "--password", password]
        cli("pools", "add", "--name", "echo", "--encryption", "tls", *add)
        out = cli("pools", "test", "echo", code=1)
        assert relay.auth_attempts

    assert out.startswith(f"FAILED  smtp_auth_error: {refused(relay)}  ("), out
    assert out.endswith(" ms)\n"), out
    assert_clean(out, password)
