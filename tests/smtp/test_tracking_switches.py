"""SMTP mail takes the tracking switches from its headers: ``X-Postroute-Track-Opens``,
``-Track-Clicks`` and ``-Unsubscribe`` (true or false) are read and removed; left out,
the account's default applies; any other value is refused with the reason."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from postroute.delivery.worker import Worker
from postroute.preparation import Tokens
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.smtp.conftest import Ports, RawClient, message, queued_id, submit
from tests.support.relay import RecordingRelay

pytestmark = pytest.mark.usefixtures("loopback_credential", "relay_pool")

HTML_PART = (
    "MIME-Version: 1.0",
    'Content-Type: text/html; charset="utf-8"',
    "Content-Transfer-Encoding: quoted-printable",
)
BODY = (
    '<html><body><a href=3D"https://shop.example/order?a=3D1&amp;b=3D2">order</a></body></html>\r\n'
)


def html_message(*controls: str) -> bytes:
    head = ("From: shop@example.com", "To: customer@example.org", "Subject: Your order")
    return message(*head, *HTML_PART, *controls, body=BODY)


async def test_the_headers_switch_tracking_and_unsubscribe_on_and_are_removed(
    ports: Ports, raw_clients: list[RawClient], relay: RecordingRelay, worker: Worker,
    runtime: Runtime,
) -> None:  # fmt: skip
    data = html_message(
        "X-Postroute-Track-Opens: false",
        "X-Postroute-Track-Clicks: true",
        "X-Postroute-Unsubscribe: TRUE",
    )
    code, text = await submit(ports, raw_clients, data)
    assert code == 250, text
    await worker.drain()
    (got,) = await relay.wait_for_async(1)
    message_id = queued_id(text)
    tokens = Tokens(runtime.settings.secret_keys)
    assert b"X-Postroute-Track" not in got.data and b"X-Postroute-Unsubscribe" not in got.data
    token = tokens.unsubscribe_token(message_id)
    assert got.parsed()["List-Unsubscribe"] == f"<http://127.0.0.1:8000/t/u/{token}>"
    html = str(got.parsed().get_body(("html",)).get_content())  # type: ignore[union-attr]
    assert "/t/o/" not in html  # opens off
    href = html.split('href="', 1)[1].split('"', 1)[0]
    click = tokens.read_click(href.removeprefix("http://127.0.0.1:8000/t/c/"))
    assert (click.message_id, click.url) == (message_id, "https://shop.example/order?a=1&b=2")


async def test_left_out_the_accounts_defaults_apply(
    ports: Ports, raw_clients: list[RawClient], relay: RecordingRelay, worker: Worker,
    client: httpx.AsyncClient, tenant: Tenant,
) -> None:  # fmt: skip
    defaults: dict[str, Any] = {"track_opens": True, "unsubscribe_header": True}
    patched = await client.patch("/v1/account", json=defaults, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    code, text = await submit(ports, raw_clients, html_message())
    assert code == 250, text
    code, text = await submit(ports, raw_clients, html_message("X-Postroute-Unsubscribe: false"))
    assert code == 250, text
    await worker.drain()
    first, second = sorted(await relay.wait_for_async(2), key=lambda m: m.received_monotonic)
    assert "List-Unsubscribe" in first.parsed() and b"/t/o/" in first.data
    assert b"https://shop.example/order" in first.data  # clicks: the account's default, off
    assert "List-Unsubscribe" not in second.parsed() and b"/t/o/" in second.data


async def test_a_value_that_is_not_true_or_false_is_refused(
    ports: Ports, raw_clients: list[RawClient]
) -> None:
    code, text = await submit(ports, raw_clients, html_message("X-Postroute-Unsubscribe: yes"))
    assert code == 550, text
    assert "X-Postroute-Unsubscribe must be true or false, not 'yes'" in text
