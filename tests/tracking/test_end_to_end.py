"""From the relay back to the events: a message sent with tracking and List-Unsubscribe
on; an HTTP client follows what the relay received (each rewritten link reaches its
original URL, the pixel is a GIF, the List-Unsubscribe URL takes Gmail's one-click
POST), and the drained events name each link, its index and the reader."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from selectolax.lexbor import LexborHTMLParser

from postroute.delivery.worker import Worker
from postroute.events import names
from postroute.kit.clock import FakeClock
from postroute.tracking.service import Tracking
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, send
from tests.preparation.tracking_support import html_of
from tests.support.relay import RecordingRelay
from tests.tracking.conftest import events_of

URLS = [f"https://shop.example/item/{n}?ref=mail&n={n}" for n in range(3)]
HTML = "<html><body>" + "".join(f'<a href="{u}">item</a> ' for u in URLS) + "</body></html>"


def local(url: str) -> str:
    """The path of a tracking URL (the test's client stands in for the public host)."""
    assert url.startswith("http://127.0.0.1:8000/t/"), url  # POSTROUTE_PUBLIC_URL
    return urlsplit(url).path


async def test_following_what_the_relay_received(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    clock: FakeClock,
    tracking: Tracking,
) -> None:
    await add_pool(client, tenant, relay.port)
    body = {"html": HTML, "track_opens": True, "track_clicks": True, "unsubscribe": True}
    sent = await send(client, tenant, **body)
    message_id = sent["messages"][0]["id"]
    await worker.drain()
    (received,) = await relay.wait_for_async(1)
    tree = LexborHTMLParser(html_of(received.data))
    hrefs = [str(a.attributes["href"]) for a in tree.css("a")]
    (src,) = [str(img.attributes["src"]) for img in tree.css("img")]
    unsubscribe = str(received.parsed()["List-Unsubscribe"]).split(",")[0].strip("<> ")

    clock.advance(90)
    assert (await client.get(local(src))).content.startswith(b"GIF89a")
    for href, url in zip(hrefs, URLS, strict=True):
        reply = await client.get(local(href))
        assert (reply.status_code, reply.headers["location"]) == (302, url)
        clock.advance(5)
    gmail = {"files": {"List-Unsubscribe": (None, "One-Click")}}
    assert (await client.post(local(unsubscribe), **gmail)).status_code == 200  # type: ignore[arg-type]
    assert await tracking.recorder.drain(final=True) == 4

    (opened,) = await events_of(client, tenant, message_id, names.OPENED)
    assert (opened["data"]["machine"], opened["data"]["first"]) == (False, True)
    clicks = await events_of(client, tenant, message_id, names.CLICKED)
    assert [(e["data"]["link_index"], e["data"]["url"]) for e in clicks] == list(enumerate(URLS))
    assert [e["data"]["first"] for e in clicks] == [True, False, False]
    assert {e["data"]["ip"] for e in clicks} == {"203.0.113.7"}
    assert len(await events_of(client, tenant, message_id, names.UNSUBSCRIBED)) == 1
    entry = await client.get("/v1/suppressions/customer@example.org", headers=tenant.headers)
    assert entry.json()["source"] == message_id
