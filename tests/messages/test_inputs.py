"""What /v1/send and /v1/messages make of awkward input: control characters in anything
that becomes a header, filters and cursors that are not what they should be, and
Idempotency-Key retries spelt differently. Every refusal is a 422 naming the field."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, send


def fields(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == "validation_failed"
    return [d["field"] for d in reply.json()["error"]["details"]]


def body(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from": "shop@example.com",
        "to": ["b@example.org"],
        "subject": "s",
        "text": "t",
    }
    return {**base, **over}


ATTACHMENT = base64.b64encode(b"%PDF").decode()


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x01", "\x7f"])
@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"subject": "s{c}X-Injected: 1"}, "subject"),
        ({"headers": {"X-Campaign": "a{c}X-Injected: 1"}}, "headers.X-Campaign"),
        (
            {"attachments": [{"filename": "a{c}.pdf", "content": ATTACHMENT}]},
            "attachments[0].filename",
        ),
        ({"from": {"email": "shop@example.com", "name": "Shop{c}X"}}, "from.name"),
        ({"to": ["Bob{c}X <b@example.org>"]}, "to[0]"),
        ({"reply_to": [{"email": "r@example.org", "name": "R{c}"}]}, "reply_to[0].name"),
        ({"tags": ["ok", "a{c}b"]}, "tags[1]"),
        ({"metadata": {"order": "12{c}34"}}, "metadata.order"),
        ({"metadata": {"or{c}der": "1234"}}, "metadata.or{c}der"),
    ],
)
async def test_control_characters_never_reach_a_header(
    client: httpx.AsyncClient, tenant: Tenant, char: str, over: dict[str, Any], field: str
) -> None:
    await add_pool(client, tenant, 2525)
    spelled = json.loads(json.dumps(over).replace("{c}", json.dumps(char)[1:-1]))
    reply = await client.post("/v1/send", json=body(**spelled), headers=tenant.headers)
    assert field.replace("{c}", char) in fields(reply)
    assert (await client.get("/v1/messages", headers=tenant.headers)).json()["data"] == []


async def test_a_tab_is_fine_in_a_header_a_vertical_tab_is_not(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await add_pool(client, tenant, 2525)
    sent = await send(client, tenant, subject="a\tb", headers={"X-Note": "c\td"})
    raw = await client.get(f"/v1/messages/{sent['messages'][0]['id']}/raw", headers=tenant.headers)
    assert b"Subject: a\tb\r\n" in raw.content and b"X-Note: c\td\r\n" in raw.content
    refused = await send(client, tenant, expect=422, subject="a\x0bb")
    assert refused["error"]["details"] == [
        {
            "field": "subject",
            "message": "must not contain control characters (U+000B); tab is allowed",
        }
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "é"},  # not ASCII
        {"cursor": base64.urlsafe_b64encode(b"msg_\x00").decode()},  # NUL reaching SQL
        {"status": "bogus"},
        {"status": "QUEUED"},
        {"since": "0.5"},  # a number of seconds is not a date-time here
        {"until": "1700000000"},
        {"since": "0001-01-01T00:00:00+14:00"},  # before year 1 in UTC
        {"until": "9999-12-31T23:59:59-14:00"},  # after year 9999 in UTC
        {"to": "a\x00@example.org"},
        {"tag": "a\x00"},
        {"tag": "x" * 101},
        {"pool": "smtp_\x00"},
        {"pool": "no such/pool"},
    ],
)
async def test_bad_filters_are_422(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, str]
) -> None:
    reply = await client.get("/v1/messages", params=params, headers=tenant.headers)
    assert fields(reply) == list(params)


async def test_status_filter_takes_the_statuses_only(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for status in ("queued", "sent", "deferred", "bounced", "dropped"):
        reply = await client.get("/v1/messages", params={"status": status}, headers=tenant.headers)
        assert reply.status_code == 200, reply.text
    reply = await client.get("/v1/messages", params={"status": "delivred"}, headers=tenant.headers)
    assert reply.json()["error"]["details"] == [
        {
            "field": "status",
            "message": "Input should be 'queued', 'sent', 'deferred', 'bounced' or 'dropped'",
        }
    ]


@pytest.mark.parametrize("message_id", ["msg%00", "%C3%A9", "a%20b", "x" * 65])
async def test_ids_that_cannot_be_ids_are_422(
    client: httpx.AsyncClient, tenant: Tenant, message_id: str
) -> None:
    for path in (f"/v1/messages/{message_id}", f"/v1/messages/{message_id}/raw"):
        assert fields(await client.get(path, headers=tenant.headers)) == ["message_id"]


async def test_idempotency_compares_the_request_not_its_bytes(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await add_pool(client, tenant, 2525)
    headers = {
        **tenant.headers,
        "Idempotency-Key": "order-1234",
        "Content-Type": "application/json",
    }
    first = await client.post(
        "/v1/send",
        content=b'{"from":"shop@example.com","to":["b@example.org"],"subject":"s","text":"t",'
        b'"metadata":{"a":"1","b":"2"}}',
        headers=headers,
    )
    assert first.status_code == 202, first.text
    same = [  # keys in another order, other spacing, a single address for a list
        b'{"metadata": {"b": "2", "a": "1"}, "text": "t", "subject": "s",\n'
        b' "to": "b@example.org", "from": "shop@example.com"}',
        b'{"to":[{"email":"b@example.org"}],"from":{"email":"shop@example.com"},"subject":"s",'
        b'"text":"t","metadata":{"b":"2","a":"1"}}',
    ]
    for content in same:
        again = await client.post("/v1/send", content=content, headers=headers)
        assert again.status_code == 202, again.text
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
    other = await client.post(
        "/v1/send", content=same[0].replace(b'"t"', b'"other"'), headers=headers
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    batch = await client.post("/v1/send/batch", json={"messages": [body()]}, headers=headers)
    assert batch.status_code == 409  # the same key for a batch is another request
    listed = await client.get("/v1/messages", headers=tenant.headers)
    assert len(listed.json()["data"]) == 1
