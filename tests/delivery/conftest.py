"""Delivery fixtures: a worker on the test runtime, pools pointing at recording relays."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.conftest import Tenant
from tests.support.relay import RecordingRelay


def secret_forms(user: str, password: str) -> list[str]:
    """What a relay may quote back of the credentials it was sent: the password, and in
    base64 the password (AUTH LOGIN), the user name, and the AUTH PLAIN string."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [password, b64(password), b64(user), b64(f"\0{user}\0{password}")]


class EchoingRelay(RecordingRelay):
    """A relay whose AUTH failure reply quotes the credentials back, as given and in
    base64, lower and upper case: ``535 5.7.8 echo LOGIN: <forms>``."""

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        result = super()._authenticate(server, session, envelope, mechanism, auth_data)
        if result.success:
            return result
        assert isinstance(auth_data, LoginPassword)
        forms = secret_forms(auth_data.login.decode(), auth_data.password.decode())
        echoed = " ".join(forms + [f.lower() for f in forms] + [f.upper() for f in forms])
        return AuthResult(
            success=False, handled=False, message=f"535 5.7.8 echo {mechanism}: {echoed}"
        )


async def add_pool(
    client: httpx.AsyncClient, tenant: Tenant, port: int, **over: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"relay-{port}", "host": "127.0.0.1", "port": port}
    body["encryption"] = "none"
    body.update(over)
    reply = await client.post("/v1/smtp-pools", json=body, headers=tenant.headers)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


async def send(
    client: httpx.AsyncClient, tenant: Tenant, expect: int = 202, **over: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": "shop@example.com",
        "to": ["customer@example.org"],
        "subject": "Your order",
        "text": "Thanks for your order.",
    }
    body.update(over)
    reply = await client.post("/v1/send", json=body, headers=tenant.headers)
    assert reply.status_code == expect, reply.text
    return dict(reply.json())


async def message(client: httpx.AsyncClient, tenant: Tenant, message_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())
