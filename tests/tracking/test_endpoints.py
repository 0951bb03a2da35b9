"""The public tracking endpoints: the pixel, the redirect, the one-click unsubscribe; a
token that fails its check is a 404 (never a redirect) and records nothing."""

from __future__ import annotations

import httpx

from postroute.delivery.worker import Worker
from postroute.events import names
from postroute.preparation.tokens import Tokens
from postroute.tracking.service import Tracking
from tests.conftest import Tenant
from tests.support.relay import RecordingRelay
from tests.tracking.conftest import events_of, sent_messages

URL = "https://shop.example.com/orders/1?utm_source=mail"


def altered(token: str) -> str:
    """``token`` with one character changed (still base64url)."""
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


async def test_forged_altered_and_foreign_tokens_are_404_and_record_nothing(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
    tracking: Tracking,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    foreign = Tokens(["another-deployments-secret-key"])
    unsub = tokens.unsubscribe_token(message_id)
    refused = {
        "/t/o/" + altered(tokens.open_token(message_id)),
        "/t/o/" + foreign.open_token(message_id),
        "/t/o/" + tokens.click_token(message_id, 0, URL),  # a click token is no pixel
        "/t/o/AAAA",
        "/t/c/" + altered(tokens.click_token(message_id, 0, URL)),
        "/t/c/" + foreign.click_token(message_id, 0, URL),
        "/t/c/" + tokens.open_token(message_id),
        "/t/c/" + tokens.click_token(message_id, 0, "javascript:alert(1)"),
        "/t/c/" + tokens.click_token(message_id, 1, "mailto:shop@example.com"),
        "/t/c/" + tokens.click_token(message_id, 2, "//evil.example/"),
        "/t/c/not-a-token",
        "/t/u/" + foreign.unsubscribe_token(message_id),
        "/t/u/" + unsub[:-1] + ("a" if unsub[-1] != "a" else "b"),
    }
    for path in sorted(refused):
        for method in ("GET", "HEAD"):
            reply = await client.request(method, path)
            assert reply.status_code == 404, (method, path, reply.text)
            assert "location" not in reply.headers, path
            if method == "GET":
                assert reply.json()["error"]["code"] == "not_found", path
    for path in sorted(p for p in refused if p.startswith("/t/u/")):
        reply = await client.post(path, data={"List-Unsubscribe": "One-Click"})
        assert reply.status_code == 404, (path, reply.text)
    assert await tracking.recorder.drain(final=True) == 0
    kinds = {e["type"] for e in await events_of(client, tenant, message_id)}
    assert not kinds & {names.OPENED, names.CLICKED, names.UNSUBSCRIBED}


async def test_the_pixel_is_a_gif_that_is_never_cached(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    path = "/t/o/" + tokens.open_token("msg_0123456789ABCDEFGHIJKLMNOP")
    for method in ("GET", "HEAD"):
        reply = await client.request(method, path)
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "image/gif"
        assert "no-store" in reply.headers["cache-control"]
        assert "private" in reply.headers["cache-control"]
        assert reply.headers["pragma"] == "no-cache"
    gif = (await client.get(path)).content
    assert gif.startswith(b"GIF89a\x01\x00\x01\x00") and len(gif) == 43


async def test_a_click_redirects_to_the_url_of_its_token(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    message_id = "msg_0123456789ABCDEFGHIJKLMNOP"
    for url, location in {
        URL: URL,
        "https://例え.jp/パス?q=ä": "https://%E4%BE%8B%E3%81%88.jp/%E3%83%91%E3%82%B9?q=%C3%A4",
        " http://shop.example.com/a b\n": "http://shop.example.com/a%20b",
        "HTTPS://Shop.Example.com/": "HTTPS://Shop.Example.com/",
    }.items():
        path = "/t/c/" + tokens.click_token(message_id, 3, url)
        for method in ("GET", "HEAD"):
            reply = await client.request(method, path)
            assert reply.status_code == 302, (url, reply.text)
            assert reply.headers["location"] == location
            assert "no-store" in reply.headers["cache-control"]


async def test_one_click_unsubscribe_as_gmail_sends_it(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
) -> None:
    """Gmail POSTs multipart/form-data (Yahoo URL-encoded): the recipient is suppressed
    for the account at once, with one `unsubscribed` event; again changes nothing."""
    gmail, yahoo = await sent_messages(client, tenant, relay, worker, count=2)
    for message_id, form in [
        (gmail, {"files": {"List-Unsubscribe": (None, "One-Click")}}),
        (yahoo, {"data": {"List-Unsubscribe": "One-Click"}}),
    ]:
        path = "/t/u/" + tokens.unsubscribe_token(message_id)
        for _ in range(2):
            reply = await client.post(path, **form)  # type: ignore[arg-type]
            assert reply.status_code == 200, reply.text
            assert "You are unsubscribed" in reply.text
            assert "no-store" in reply.headers["cache-control"]
        (event,) = await events_of(client, tenant, message_id, names.UNSUBSCRIBED)
        assert event["data"]["method"] == "one_click"
    listed = await client.get("/v1/suppressions", headers=tenant.headers)
    assert listed.status_code == 200, listed.text
    entries = {e["email"]: e for e in listed.json()["data"]}
    assert entries.keys() == {"reader0@example.org", "reader1@example.org"}
    for i, message_id in enumerate((gmail, yahoo)):
        entry = entries[f"reader{i}@example.org"]
        assert (entry["reason"], entry["source"], entry["expires_at"]) == (
            "unsubscribe",
            message_id,
            None,
        )


async def test_an_unsubscribe_after_the_entry_was_removed_adds_it_back(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
) -> None:
    """The recipient asked again: suppressed again, without a second event."""
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    path = "/t/u/" + tokens.unsubscribe_token(message_id)
    entry = "/v1/suppressions/reader0@example.org"
    assert (await client.post(path, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    assert (await client.delete(entry, headers=tenant.headers)).status_code == 204
    assert (await client.get(entry, headers=tenant.headers)).status_code == 404
    assert (await client.post(path, data={"List-Unsubscribe": "One-Click"})).status_code == 200
    assert (await client.get(entry, headers=tenant.headers)).json()["source"] == message_id
    assert len(await events_of(client, tenant, message_id, names.UNSUBSCRIBED)) == 1


async def test_a_get_shows_the_button_and_never_unsubscribes(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    path = "/t/u/" + tokens.unsubscribe_token(message_id)
    for method in ("GET", "HEAD", "GET"):
        reply = await client.request(method, path)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
    page = (await client.get(path)).text
    assert '<form method="post">' in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page
    assert await events_of(client, tenant, message_id, names.UNSUBSCRIBED) == []
    listed = await client.get("/v1/suppressions", headers=tenant.headers)
    assert listed.json()["data"] == []


async def test_an_unsubscribe_post_without_one_click_is_a_400(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    tokens: Tokens,
) -> None:
    (message_id,) = await sent_messages(client, tenant, relay, worker)
    path = "/t/u/" + tokens.unsubscribe_token(message_id)
    for kwargs in [
        {},
        {"data": {"List-Unsubscribe": "Yes"}},
        {"json": {"List-Unsubscribe": "One-Click"}},
        {"files": {"List-Unsubscribe": ("one-click.txt", b"One-Click")}},
        {"content": b"List-Unsubscribe=One-Click&pad=" + b"x" * 5000},
    ]:
        reply = await client.post(path, **kwargs)  # type: ignore[arg-type]
        assert reply.status_code == 400, (kwargs.keys(), reply.text)
        error = reply.json()["error"]
        assert error["code"] == "bad_request"
        assert "List-Unsubscribe=One-Click" in error["message"]
    assert await events_of(client, tenant, message_id, names.UNSUBSCRIBED) == []
