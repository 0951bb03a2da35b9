"""Tracking end to end over HTTP: the relay receives each recipient's message with its
own tracked links (each token reads back as the original URL), its open pixel and its
List-Unsubscribe; ``GET /raw`` shows those bytes; a verified domain's links go to its
tracking host, its mailto to its return-path domain, and DKIM still verifies; the
account's defaults apply to sends that leave a switch out."""

from __future__ import annotations

from typing import Any

import httpx
from selectolax.lexbor import LexborHTMLParser

from postroute.delivery.worker import Worker
from postroute.preparation import Tokens
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, send
from tests.domains.conftest import dkim_results, verified_domain
from tests.preparation.tracking_support import html_of
from tests.support.dns import DnsServer
from tests.support.relay import ReceivedMessage, RecordingRelay

URLS = [f"https://shop.example/item/{n}?ref=mail&amp;n={n}" for n in range(10)]
HTML = (
    "<html><body><p>Your order &amp; more &copy;</p>\r\n"
    + "".join(f'<a href="{u}">item {n}</a>\r\n' for n, u in enumerate(URLS))
    + '<a href="mailto:help@shop.example">help</a> <a href="/relative">rel</a>\r\n'
    + "<!--[if mso]><p>Outlook</p><![endif]--></body></html>"
)
TEXT = "Your order: https://shop.example/item/0"


def hrefs(received: ReceivedMessage) -> list[str]:
    tree = LexborHTMLParser(html_of(received.data))
    return [str(n.attributes.get("href")) for n in tree.css("a")]


def pixels(received: ReceivedMessage) -> list[str]:
    tree = LexborHTMLParser(html_of(received.data))
    return [str(n.attributes.get("src")) for n in tree.css("img")]


def by_recipient(messages: list[ReceivedMessage]) -> dict[str, ReceivedMessage]:
    return {m.rcpt_tos[0]: m for m in messages}


async def test_the_relay_gets_each_recipients_tracked_links_and_list_unsubscribe(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker,
    runtime: Runtime,
) -> None:  # fmt: skip
    await add_pool(client, tenant, relay.port)
    sent = await send(
        client, tenant, to=["a@example.org"], cc=["b@example.org"], html=HTML, text=TEXT,
        track_opens=True, track_clicks=True, unsubscribe=True,
    )  # fmt: skip
    await worker.drain()
    received = by_recipient(await relay.wait_for_async(2))
    tokens = Tokens(runtime.settings.secret_keys)
    base = "http://127.0.0.1:8000"  # POSTROUTE_PUBLIC_URL: the domain is not verified
    for reply in sent["messages"]:
        got = received[reply["to"]]
        links = hrefs(got)
        assert links[10:] == ["mailto:help@shop.example", "/relative"]
        for n, href in enumerate(links[:10]):
            assert href.startswith(f"{base}/t/c/")
            click = tokens.read_click(href.rsplit("/", 1)[1])
            assert (click.message_id, click.index) == (reply["id"], n)
            assert click.url == URLS[n].replace("&amp;", "&")  # as a browser reads it
        (src,) = pixels(got)
        assert tokens.read_open(src.removeprefix(f"{base}/t/o/")) == reply["id"]
        unsubscribe = got.parsed()["List-Unsubscribe"]
        assert unsubscribe == f"<{base}/t/u/{tokens.unsubscribe_token(reply['id'])}>"
        assert got.parsed()["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert b"<!--[if mso]><p>Outlook</p><![endif]-->" in got.data
        assert b"&amp; more &copy;" in got.data
        text = [p for p in got.parsed().walk() if p.get_content_type() == "text/plain"]
        assert text[0].get_content() == TEXT + "\r\n" or text[0].get_content() == TEXT + "\n"
        raw = await client.get(f"/v1/messages/{reply['id']}/raw", headers=tenant.headers)
        assert raw.content == f"Return-Path: <{got.mail_from}>\r\n".encode() + got.data


async def test_a_verified_domains_links_use_its_tracking_host_and_dkim_verifies(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker,
    runtime: Runtime, dns: DnsServer,
) -> None:  # fmt: skip
    await add_pool(client, tenant, relay.port)
    domain = await verified_domain(client, tenant, dns)
    assert domain["tracking_verified"] is True
    sent = await send(
        client, tenant, html=HTML, track_opens=True, track_clicks=True, unsubscribe=True
    )
    await worker.drain()
    (got,) = await relay.wait_for_async(1)
    message_id = sent["messages"][0]["id"]
    tokens = Tokens(runtime.settings.secret_keys)
    token = tokens.unsubscribe_token(message_id)
    assert got.parsed()["List-Unsubscribe"] == (
        f"<http://track.example.com/t/u/{token}>, <mailto:unsub+{token}@bounces.example.com>"
    )
    assert all(h.startswith("http://track.example.com/t/c/") for h in hrefs(got)[:10])
    assert dkim_results(got.data, dns) == [True]


async def test_the_accounts_defaults_apply_when_a_send_leaves_a_switch_out(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port)
    defaults = {"track_opens": True, "track_clicks": True, "unsubscribe_header": True}
    patched = await client.patch("/v1/account", json=defaults, headers=tenant.headers)
    assert patched.status_code == 200, patched.text
    # null is not "off" nor "unchanged": refused, and nothing changes
    null = await client.patch("/v1/account", json={"track_opens": None}, headers=tenant.headers)
    assert null.status_code == 422, null.text
    (detail,) = null.json()["error"]["details"]
    assert detail["field"] == "track_opens" and "true or false" in detail["message"]
    assert (await client.get("/v1/account", headers=tenant.headers)).json()["track_opens"] is True
    await send(client, tenant, to=["default@example.org"], html=HTML)
    off: dict[str, Any] = {"track_opens": False, "track_clicks": False, "unsubscribe": False}
    await send(client, tenant, to=["off@example.org"], html=HTML, **off)
    await worker.drain()
    received = by_recipient(await relay.wait_for_async(2))
    on, plain = received["default@example.org"], received["off@example.org"]
    assert len(pixels(on)) == 1 and "/t/c/" in hrefs(on)[0]
    assert "List-Unsubscribe" in on.parsed()
    assert pixels(plain) == [] and hrefs(plain)[0] == URLS[0].replace("&amp;", "&")
    assert "List-Unsubscribe" not in plain.parsed()
