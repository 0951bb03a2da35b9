"""SMTP mail takes the tracking switches from its headers: ``X-Postroute-Track-Opens``,
``-Track-Clicks`` and ``-Unsubscribe`` (true or false) are read and removed; left out,
the account's default applies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from postroute.delivery.worker import Worker
from postroute.preparation import Tokens
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.smtp.conftest import Ports, RawClient, queued_id, submit
from tests.smtp.test_tracking_switches import html_message
from tests.support.relay import RecordingRelay

pytestmark = pytest.mark.usefixtures("loopback_credential", "relay_pool")


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
    first_id = queued_id(text)
    code, text = await submit(ports, raw_clients, html_message("X-Postroute-Unsubscribe: false"))
    assert code == 250, text
    await worker.drain()
    received = await relay.wait_for_async(2)  # (sent side by side: in any order)
    first, second = sorted(received, key=lambda m: m.parsed()["X-Postroute-Message-ID"] != first_id)
    assert "List-Unsubscribe" in first.parsed() and b"/t/o/" in first.data
    assert b"https://shop.example/order" in first.data  # clicks: the account's default, off
    assert "List-Unsubscribe" not in second.parsed() and b"/t/o/" in second.data
