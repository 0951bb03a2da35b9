"""SMTP mail takes the tracking switches from its headers: ``X-Postroute-Track-Opens``,
``-Track-Clicks`` and ``-Unsubscribe`` are true or false; any other value is refused
with the reason (what they do to the relayed message: test_tracking_delivered.py)."""

from __future__ import annotations

import pytest

from tests.smtp.conftest import Ports, RawClient, message, submit

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


async def test_a_value_that_is_not_true_or_false_is_refused(
    ports: Ports, raw_clients: list[RawClient]
) -> None:
    code, text = await submit(ports, raw_clients, html_message("X-Postroute-Unsubscribe: yes"))
    assert code == 550, text
    assert "X-Postroute-Unsubscribe must be true or false, not 'yes'" in text
