"""The worker against recording relays: outcomes, retries, leases, connection reuse."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta
from typing import Any, cast

import httpx
import pytest
import sqlalchemy as sa

from postroute.db import transaction
from postroute.delivery import repository as queue
from postroute.delivery.flight import InFlight
from postroute.delivery.worker import HELD, Worker
from postroute.kit.clock import FakeClock
from postroute.models import Delivery, SmtpPool
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message, send
from tests.support.fixtures import RelayFactory
from tests.support.relay import RecordingRelay


async def test_sent_with_relay_reply_and_queue_id(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    pool = await add_pool(client, tenant, relay.port)
    reply = await send(client, tenant)
    (sent,) = reply["messages"]
    assert sent["to"] == "customer@example.org"
    assert (await message(client, tenant, sent["id"]))["status"] == "queued"

    await worker.drain()
    (received,) = relay.wait_for(1)
    assert received.mail_from == "shop@example.com"
    assert list(received.rcpt_tos) == ["customer@example.org"]
    parsed = received.parsed()
    assert parsed["X-Postroute-Message-ID"] == sent["id"]
    assert parsed["Message-ID"] == sent["message_id"]
    assert parsed["X-Postroute-Pool-ID"] == pool["id"]

    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent"
    assert detail["relay_queue_id"] == received.queue_id
    assert [e["type"] for e in detail["events"]] == ["queued", "processed", "sent"]
    (attempt,) = detail["delivery_attempts"]
    assert attempt["outcome"] == "sent" and attempt["reply_code"] == 250
    assert attempt["pool_id"] == pool["id"]

    raw = await client.get(f"/v1/messages/{sent['id']}/raw", headers=tenant.headers)
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("message/rfc822")
    # as relayed, with the envelope sender noted on top (as a receiving server does)
    assert raw.content == f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data

    pools = (await client.get("/v1/smtp-pools", headers=tenant.headers)).json()["data"]
    assert pools[0]["usage"]["sent_today"] == 1


async def test_rich_message_arrives_intact(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port)
    pdf = bytes(range(256)) * 40
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    await send(
        client,
        tenant,
        **{
            "from": {"email": "shop@example.com", "name": "Zoë's Shöp"},
            "to": [{"email": "customer@example.org", "name": "Ünïcødé 日本"}],
            "subject": "Votre reçu — ご注文",
            "text": "Plain body é",
            "html": '<p>Hi <img src="cid:logo"></p>',
            "attachments": [
                {"filename": "reçu.pdf", "content": base64.b64encode(pdf).decode()},
                {
                    "filename": "logo.png",
                    "content": base64.b64encode(png).decode(),
                    "content_type": "image/png",
                    "content_id": "logo",
                },
            ],
        },
    )
    await worker.drain()
    (received,) = relay.wait_for(1)
    parsed = received.parsed()
    assert parsed["Subject"] == "Votre reçu — ご注文"
    assert parsed["From"].addresses[0].display_name == "Zoë's Shöp"
    assert parsed["To"].addresses[0].display_name == "Ünïcødé 日本"
    parts = {p.get_content_type(): p for p in parsed.walk()}
    # set_content ends a text part with a line break; the text itself is unchanged
    assert parts["text/plain"].get_content().replace("\r\n", "\n") == "Plain body é\n"
    assert 'src="cid:logo"' in parts["text/html"].get_content()
    assert parts["application/pdf"].get_content() == pdf
    assert parts["application/pdf"].get_filename() == "reçu.pdf"
    assert parts["image/png"].get_content() == png
    assert parts["image/png"]["Content-ID"] == "<logo>"
    assert "multipart/related" in parts


async def test_bcc_gets_mail_without_a_trace(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port)
    reply = await send(
        client,
        tenant,
        to=["a@example.org"],
        cc=["c@example.org"],
        bcc=["secret-watcher@example.net"],
    )
    assert [m["to"] for m in reply["messages"]] == [
        "a@example.org",
        "c@example.org",
        "secret-watcher@example.net",
    ]
    await worker.drain()
    received = relay.wait_for(3)
    assert sorted(r for m in received for r in m.rcpt_tos) == [
        "a@example.org",
        "c@example.org",
        "secret-watcher@example.net",
    ]
    for m in received:
        assert b"secret-watcher" not in m.data
        assert m.parsed()["Cc"] == "c@example.org"


async def test_451_then_250_is_deferred_then_sent(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    clock: FakeClock,
) -> None:
    relay = relay_factory(data_replies=["451 4.3.0 Try again later"])
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    first_try = clock.now()
    await worker.drain()
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "deferred"
    assert detail["last_reply"] == "451 4.3.0 Try again later"
    deferred = next(e for e in detail["events"] if e["type"] == "deferred")
    assert deferred["data"]["next_attempt_at"] == (first_try + timedelta(seconds=60)).isoformat()

    clock.advance(59)
    await worker.drain()
    assert (await message(client, tenant, sent["id"]))["attempts"] == 1  # not due yet

    clock.advance(1)
    await worker.drain()
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "sent"
    assert detail["attempts"] == 2
    assert [a["outcome"] for a in detail["delivery_attempts"]] == ["deferred", "sent"]
    assert [e["type"] for e in detail["events"]] == ["queued", "processed", "deferred", "sent"]
    assert len(relay.messages) == 1


async def test_550_bounces_after_one_attempt(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    clock: FakeClock,
) -> None:
    relay = relay_factory(rcpt_replies=["550 5.1.1 No such user"])
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    await worker.drain()
    clock.advance(3600)
    await worker.drain()
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "bounced"
    assert detail["attempts"] == 1
    assert detail["last_reply"] == "550 5.1.1 No such user"
    bounced = next(e for e in detail["events"] if e["type"] == "bounced")
    assert bounced["data"]["type"] == "hard"


async def test_relay_down_throughout_is_dropped_after_five_attempts(
    client: httpx.AsyncClient, tenant: Tenant, closed_port: int, worker: Worker, clock: FakeClock
) -> None:
    await add_pool(client, tenant, closed_port)
    (sent,) = (await send(client, tenant))["messages"]
    for attempt in range(1, 6):
        await worker.drain()
        detail = await message(client, tenant, sent["id"])
        assert detail["attempts"] == attempt
        clock.advance(attempt * 60)
    assert detail["status"] == "dropped"
    assert [a["error_code"] for a in detail["delivery_attempts"]] == ["smtp_connection_error"] * 5
    dropped = next(e for e in detail["events"] if e["type"] == "dropped")
    assert "smtp_connection_error" in dropped["data"]["reply"]
    clock.advance(3600)
    await worker.drain()
    assert (await message(client, tenant, sent["id"]))["attempts"] == 5


async def test_expired_lease_is_claimed_again(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    clock: FakeClock,
) -> None:
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    async with transaction(runtime.sessions) as session:  # a worker claims, then dies
        claimed = await queue.claim(session, "dead-worker", clock.now(), timedelta(seconds=300), 10)
    assert [c.message_id for c in claimed] == [sent["id"]]

    await worker.drain()
    assert relay.messages == []  # still leased by the dead worker
    clock.advance(301)
    await worker.drain()
    relay.wait_for(1)
    clock.advance(3600)
    await worker.drain()
    assert len(relay.messages) == 1  # exactly once
    assert (await message(client, tenant, sent["id"]))["status"] == "sent"
    async with runtime.sessions() as session:
        left = await session.scalar(sa.select(sa.func.count()).select_from(Delivery))
    assert left == 0


async def test_connections_are_capped_and_reused(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port, max_connections=2)
    batch = [
        {"from": "shop@example.com", "to": [f"user{i}@example.org"], "subject": "Hi", "text": "x"}
        for i in range(200)
    ]
    reply = await client.post("/v1/send/batch", json={"messages": batch}, headers=tenant.headers)
    assert reply.status_code == 202, reply.text
    await worker.drain()
    relay.wait_for(200)
    assert relay.connections <= 2
    assert relay.peak_sessions <= 2
    assert relay.rset_count >= 198  # RSET before each reuse
    assert relay.pipelined_count == 200  # RSET, MAIL, RCPT, DATA as one group (RFC 2920)


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_session_the_relay_closed_meanwhile_is_replaced_without_an_attempt(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay_factory: RelayFactory,
    worker: Worker,
    pipelining: bool,
) -> None:
    relay = relay_factory(pipelining=pipelining)
    await add_pool(client, tenant, relay.port)
    await send(client, tenant)
    await worker.drain()
    relay.wait_for(1)
    relay.drop_sessions()  # the relay's idle timeout, while the worker keeps the session
    (second,) = (await send(client, tenant, to=["later@example.org"]))["messages"]
    await worker.drain()
    assert [m.rcpt_tos for m in relay.wait_for(2)] == [
        ("customer@example.org",),
        ("later@example.org",),
    ]
    detail = await message(client, tenant, second["id"])
    assert detail["status"] == "sent"
    assert detail["attempts"] == 1
    assert [a["outcome"] for a in detail["delivery_attempts"]] == ["sent"]
    assert relay.connections == 2


async def test_stop_releases_jobs_not_started(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, runtime: Runtime
) -> None:
    relay = relay_factory(data_delay=0.2)
    await add_pool(client, tenant, relay.port, max_connections=1)
    batch = [
        {"from": "shop@example.com", "to": [f"u{i}@example.org"], "subject": "Hi", "text": "x"}
        for i in range(5)
    ]
    await client.post("/v1/send/batch", json={"messages": batch}, headers=tenant.headers)
    worker = Worker(runtime, owner="stopping-worker")
    await worker._claim_and_dispatch()
    for _ in range(500):  # until the first message is on the wire (DATA answers after 0.2 s)
        if relay.current_sessions:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    await worker.stop(grace=5)
    async with runtime.sessions() as session:
        rows = (await session.execute(sa.select(Delivery.lease_owner, Delivery.state))).all()
    assert len(relay.messages) + len(rows) == 5
    assert all(owner is None and state == "queued" for owner, state in rows)
    assert len(relay.messages) >= 1
    fresh = Worker(runtime, owner="next-worker")
    await fresh.drain()
    await fresh.close()
    relay.wait_for(5)
    assert len({r for m in relay.messages for r in m.rcpt_tos}) == 5


async def test_utf8_address_uses_smtputf8(
    client: httpx.AsyncClient, tenant: Tenant, relay: RecordingRelay, worker: Worker
) -> None:
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant, to=["zoë@exämple.org"], subject="Grüße"))["messages"]
    await worker.drain()
    (received,) = relay.wait_for(1)
    assert list(received.rcpt_tos) == ["zoë@exämple.org"]
    assert received.parsed()["Subject"] == "Grüße"
    assert (await message(client, tenant, sent["id"]))["status"] == "sent"


async def test_utf8_address_bounces_when_relay_lacks_smtputf8(
    client: httpx.AsyncClient, tenant: Tenant, relay_factory: RelayFactory, worker: Worker
) -> None:
    relay = relay_factory(smtputf8=False)
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant, to=["zoë@exämple.org"]))["messages"]
    await worker.drain()
    detail = await message(client, tenant, sent["id"])
    assert detail["status"] == "bounced"
    assert "SMTPUTF8" in detail["last_reply"]
    assert relay.messages == []


async def test_a_claim_that_fails_after_leasing_gives_the_messages_back_at_once(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    refresh = worker.dispatcher.directory.refresh

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("reading the pools failed")

    monkeypatch.setattr(worker.dispatcher.directory, "refresh", broken)
    with pytest.raises(RuntimeError):
        await worker.drain()
    monkeypatch.setattr(worker.dispatcher.directory, "refresh", refresh)

    await worker.drain()  # no lease to wait out: the same clock, sent now
    relay.wait_for(1)
    assert (await message(client, tenant, sent["id"]))["status"] == "sent"


async def test_a_stop_during_a_claim_hands_the_claimed_messages_back_unsent(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await add_pool(client, tenant, relay.port)
    (sent,) = (await send(client, tenant))["messages"]
    entered, go = asyncio.Event(), asyncio.Event()
    refresh = worker.dispatcher.directory.refresh

    async def slow(*args: Any, **kwargs: Any) -> None:
        entered.set()
        await go.wait()
        await refresh(*args, **kwargs)

    monkeypatch.setattr(worker.dispatcher.directory, "refresh", slow)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(entered.wait(), 5)  # rows leased, dispatch under way
    await worker.stop(1)
    go.set()
    await asyncio.wait_for(run, 5)

    async with runtime.sessions() as session:
        rows = (await session.execute(sa.select(Delivery.state, Delivery.lease_owner))).all()
    assert [tuple(r) for r in rows] == [("queued", None)]
    assert relay.messages == []
    other = Worker(runtime, owner="next-worker")
    try:
        await other.drain()
    finally:
        await other.close()
    relay.wait_for(1)
    assert (await message(client, tenant, sent["id"]))["status"] == "sent"


async def test_a_down_pool_is_probed_while_other_pools_keep_the_worker_busy(
    client: httpx.AsyncClient,
    tenant: Tenant,
    relay: RecordingRelay,
    runtime: Runtime,
    worker: Worker,
) -> None:
    down = await add_pool(client, tenant, relay.port, name="down", priority=2)
    await add_pool(client, tenant, relay.port, name="busy", priority=1, is_default=True)
    past = runtime.clock.now() - timedelta(minutes=5)
    async with transaction(runtime.sessions) as session:
        await session.execute(
            sa.update(SmtpPool)
            .where(SmtpPool.id == down["id"])
            .values(health_state="down", down_until=past, consecutive_failures=5)
        )
    await send(client, tenant, pool="busy")
    assert await worker._claim_and_dispatch() == 1  # a claim that found work
    await worker.dispatcher.prober.wait()
    pool = (await client.get(f"/v1/smtp-pools/{down['id']}", headers=tenant.headers)).json()
    assert pool["health"]["state"] == "healthy"  # probed (the relay answers) and closed


def test_finished_messages_waiting_to_be_written_do_not_hold_up_the_next_claim(
    runtime: Runtime,
) -> None:
    """Room is counted on the messages still to be sent; what waits to be written (e.g.
    for SQLite's lock) counts only against the overall cap of HELD batches."""
    w = Worker(runtime, owner="room-test")
    w.capacity = 10
    placeholder = cast(InFlight, object())
    w.dispatcher.inflight = {f"m{i}": placeholder for i in range(10)}
    assert (w._free(), w._room()) == (0, False)
    w._finished = [placeholder] * 4  # 6 still being sent
    assert (w._free(), w._room()) == (4, False)
    w._finished = [placeholder] * 5  # half done: claim again
    assert (w._free(), w._room()) == (5, True)
    w._finished, w._recording = [placeholder] * 2, 8  # being written counts as done
    assert (w._free(), w._room()) == (10, True)
    w.dispatcher.inflight = {f"m{i}": placeholder for i in range(HELD * 10)}  # none written
    w._finished, w._recording = [placeholder] * (HELD * 10), 0
    assert (w._free(), w._room()) == (0, False)
