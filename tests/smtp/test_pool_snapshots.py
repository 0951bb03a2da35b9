"""The SMTP handler plans a message against the account's pools as it last read them,
outside any transaction, and the commit checks that they still hold (their stamp).

A pool created through the API since is found by reading the pools again when the
cached ones refuse the message. A pool renamed, deleted, made inactive or made the
default since is seen at commit time: the cached pools would still plan the message the
old way, so only the stamp check in ``ingest.store`` stores it the new way (or refuses
it). The stamp holds the names and flags, not only ``updated_at``: the FakeClock is
left where it was in the ``same-instant`` cases, so ``updated_at`` does not change.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from postroute.kit.clock import FakeClock
from postroute.smtp.listeners import SmtpServer
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool
from tests.smtp.conftest import Ports, RawClient, message, queued_id, submit
from tests.support.relay import RecordingRelay

pytestmark = pytest.mark.usefixtures("loopback_credential")

FROM = "From: shop@example.com"
TO = "To: customer@example.org"
SUBJECT = "Subject: Your order"

# Seconds the clock moves before a pool is changed: 0 leaves every updated_at as it was.
CLOCK = pytest.mark.parametrize("advance", [0, 5], ids=["same-instant", "clock-advanced"])


async def accepted(ports: Ports, opened: list[RawClient], *headers: str) -> str:
    """Send a message with these headers (From, To, Subject unless given): its id."""
    code, text = await submit(ports, opened, message(*headers))
    assert code == 250, text
    return queued_id(text)


async def detail(client: httpx.AsyncClient, tenant: Tenant, message_id: str) -> dict[str, Any]:
    reply = await client.get(f"/v1/messages/{message_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def stored_count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    reply = await client.get("/v1/messages", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return len(reply.json()["data"])


async def patch_pool(
    client: httpx.AsyncClient, tenant: Tenant, pool_id: str, **fields: Any
) -> dict[str, Any]:
    reply = await client.patch(f"/v1/smtp-pools/{pool_id}", json=fields, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def cached(server: SmtpServer, tenant: Tenant) -> dict[str, tuple[bool, bool, str | None]]:
    """The handler's cached pools of the tenant: name -> (is_active, is_default,
    from_email). Checked before a send so that a test knows which path it takes."""
    known = server.handler.submitter.known(tenant.account_id)
    assert known is not None
    pools = known.pools
    return {p.name: (p.is_active, p.is_default, p.from_email) for p in pools}


# -- 1. a pool created since the pools were cached ------------------------------------------


async def test_a_pool_created_after_the_cache_is_usable_at_once(
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    first = await accepted(ports, raw_clients, FROM, TO, SUBJECT)  # fills the cache
    assert (await detail(client, tenant, first))["pool_id"] == relay_pool["id"]
    assert set(cached(smtp_server, tenant)) == {"main"}

    created = await add_pool(client, tenant, relay.port, name="fresh")
    assert set(cached(smtp_server, tenant)) == {"main"}  # the cache does not know it yet
    message_id = await accepted(ports, raw_clients, FROM, TO, SUBJECT, "X-Postroute-Pool: fresh")
    stored = await detail(client, tenant, message_id)
    assert stored["pool_id"] == created["id"]
    assert stored["requested_pool"] == "fresh"
    assert "fresh" in cached(smtp_server, tenant)  # read again, and kept

    by_id = await accepted(
        ports, raw_clients, FROM, TO, SUBJECT, f"X-Postroute-Pool: {created['id']}"
    )
    assert (await detail(client, tenant, by_id))["pool_id"] == created["id"]


async def test_the_first_pool_created_after_a_refusal_for_no_pool_is_used(
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    code, text = await submit(ports, raw_clients, message(FROM, TO, SUBJECT))
    assert code == 550 and "no active SMTP pool" in text, text
    assert cached(smtp_server, tenant) == {}  # the pools were read (none) and kept

    created = await add_pool(client, tenant, relay.port, name="first")
    message_id = await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    stored = await detail(client, tenant, message_id)
    assert stored["pool_id"] == created["id"] and stored["route_note"] is None


async def test_a_message_still_refused_after_the_second_read_is_refused(
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    client: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    code, text = await submit(
        ports, raw_clients, message(FROM, TO, SUBJECT, "X-Postroute-Pool: nope")
    )
    assert code == 550, text
    assert "X-Postroute-Pool: no SMTP pool with id or name 'nope'" in text
    assert await stored_count(client, tenant) == 1


# -- 2. a pool renamed or deleted since: refused at commit time -----------------------------


@CLOCK
async def test_a_pool_renamed_since_the_cache_is_refused_by_its_old_name(
    advance: int,
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
    clock: FakeClock,
) -> None:
    pool_a = await add_pool(client, tenant, relay.port, name="A")
    first = await accepted(ports, raw_clients, FROM, TO, SUBJECT, "X-Postroute-Pool: A")
    assert (await detail(client, tenant, first))["pool_id"] == pool_a["id"]

    clock.advance(advance)
    renamed = await patch_pool(client, tenant, pool_a["id"], name="B")
    assert (renamed["updated_at"] == pool_a["updated_at"]) == (advance == 0)
    # The cached pools still have A: the plan before the transaction succeeds, and only
    # the stamp checked in the commit's transaction can refuse the message.
    assert "A" in cached(smtp_server, tenant)

    code, text = await submit(ports, raw_clients, message(FROM, TO, SUBJECT, "X-Postroute-Pool: A"))
    assert code == 550, text
    assert text == "5.7.1 X-Postroute-Pool: no SMTP pool with id or name 'A'"
    assert await stored_count(client, tenant) == 1  # nothing written for it
    assert set(cached(smtp_server, tenant)) == {"main", "B"}  # the pools read there, kept

    by_new_name = await accepted(ports, raw_clients, FROM, TO, SUBJECT, "X-Postroute-Pool: B")
    assert (await detail(client, tenant, by_new_name))["pool_id"] == pool_a["id"]


@CLOCK
async def test_a_pool_deleted_since_the_cache_is_refused(
    advance: int,
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
    clock: FakeClock,
) -> None:
    pool_a = await add_pool(client, tenant, relay.port, name="A")
    await accepted(ports, raw_clients, FROM, TO, SUBJECT, "X-Postroute-Pool: A")

    clock.advance(advance)
    reply = await client.delete(f"/v1/smtp-pools/{pool_a['id']}", headers=tenant.headers)
    assert reply.status_code == 204, reply.text
    assert "A" in cached(smtp_server, tenant)

    for ref in ("A", pool_a["id"]):
        code, text = await submit(
            ports, raw_clients, message(FROM, TO, SUBJECT, f"X-Postroute-Pool: {ref}")
        )
        assert code == 550, text
        assert text == f"5.7.1 X-Postroute-Pool: no SMTP pool with id or name '{ref}'"
    assert await stored_count(client, tenant) == 1
    assert set(cached(smtp_server, tenant)) == {"main"}


async def test_a_pool_replaced_by_another_of_the_same_name_gets_the_new_one(
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
) -> None:
    old = await add_pool(client, tenant, relay.port, name="A")
    await accepted(ports, raw_clients, FROM, TO, SUBJECT, "X-Postroute-Pool: A")
    reply = await client.delete(f"/v1/smtp-pools/{old['id']}", headers=tenant.headers)
    assert reply.status_code == 204, reply.text
    new = await add_pool(client, tenant, relay.port, name="A")
    assert "A" in cached(smtp_server, tenant)  # the old A: planned against it first

    message_id = await accepted(ports, raw_clients, FROM, TO, SUBJECT, "X-Postroute-Pool: A")
    assert (await detail(client, tenant, message_id))["pool_id"] == new["id"]


# -- 3. the default switched since ----------------------------------------------------------


@CLOCK
async def test_a_message_without_a_pool_goes_to_the_default_switched_since(
    advance: int,
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
    clock: FakeClock,
) -> None:
    other = await add_pool(client, tenant, relay.port, name="other")
    first = await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    assert (await detail(client, tenant, first))["pool_id"] == relay_pool["id"]

    clock.advance(advance)
    switched = await patch_pool(client, tenant, other["id"], is_default=True)
    assert switched["is_default"] is True
    assert cached(smtp_server, tenant)["main"][1] is True  # still the default there

    message_id = await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    stored = await detail(client, tenant, message_id)
    assert stored["pool_id"] == other["id"]
    assert stored["requested_pool"] is None and stored["route_note"] is None
    assert cached(smtp_server, tenant)["other"][1] is True


# -- 4. a pool made inactive since ----------------------------------------------------------


@CLOCK
async def test_a_message_without_a_pool_skips_the_pool_made_inactive_since(
    advance: int,
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
    clock: FakeClock,
) -> None:
    backup = await add_pool(client, tenant, relay.port, name="backup")
    first = await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    assert (await detail(client, tenant, first))["pool_id"] == relay_pool["id"]

    clock.advance(advance)
    await patch_pool(client, tenant, relay_pool["id"], is_active=False)
    assert cached(smtp_server, tenant)["main"][0] is True  # still active there

    message_id = await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    stored = await detail(client, tenant, message_id)
    assert stored["pool_id"] == backup["id"]
    assert stored["route_note"] == (
        "no active default pool; used backup, the first active pool by priority"
    )

    # Now none is active: the cache (read at that commit) still has backup active.
    clock.advance(advance)
    await patch_pool(client, tenant, backup["id"], is_active=False)
    assert cached(smtp_server, tenant)["backup"][0] is True
    code, text = await submit(ports, raw_clients, message(FROM, TO, SUBJECT))
    assert code == 550, text
    assert text == (
        "5.7.1 no active SMTP pool: create one (POST /v1/smtp-pools, or postroute pools add)"
    )
    assert await stored_count(client, tenant) == 2


@CLOCK
async def test_a_message_without_a_pool_follows_a_priority_changed_since(
    advance: int,
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay_pool: dict[str, Any],
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
    clock: FakeClock,
) -> None:
    """No default: the first active pool by priority, changed since the cache."""
    await patch_pool(client, tenant, relay_pool["id"], is_default=False, priority=10)
    second = await add_pool(client, tenant, relay.port, name="second", priority=20)
    first = await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    assert (await detail(client, tenant, first))["pool_id"] == relay_pool["id"]

    clock.advance(advance)
    await patch_pool(client, tenant, second["id"], priority=5)
    message_id = await accepted(ports, raw_clients, FROM, TO, SUBJECT)
    assert (await detail(client, tenant, message_id))["pool_id"] == second["id"]


@CLOCK
async def test_a_message_without_from_takes_the_from_email_set_since(
    advance: int,
    ports: Ports,
    raw_clients: list[RawClient],
    smtp_server: SmtpServer,
    relay: RecordingRelay,
    client: httpx.AsyncClient,
    tenant: Tenant,
    clock: FakeClock,
) -> None:
    pool = await add_pool(client, tenant, relay.port, name="main", from_email="old@example.com")
    first = await accepted(ports, raw_clients, TO, SUBJECT)
    assert (await detail(client, tenant, first))["from"] == "old@example.com"

    clock.advance(advance)
    await patch_pool(client, tenant, pool["id"], from_email="new@example.com")
    assert cached(smtp_server, tenant)["main"][2] == "old@example.com"
    message_id = await accepted(ports, raw_clients, TO, SUBJECT)
    assert (await detail(client, tenant, message_id))["from"] == "new@example.com"
    raw = await client.get(f"/v1/messages/{message_id}/raw", headers=tenant.headers)
    assert b"\r\nFrom: new@example.com\r\n" in raw.content
    assert b"old@example.com" not in raw.content

    # Removed since: the message without From is refused, nothing stored.
    clock.advance(advance)
    await patch_pool(client, tenant, pool["id"], from_email=None)
    code, text = await submit(ports, raw_clients, message(TO, SUBJECT))
    assert code == 550, text
    assert text == "5.7.1 missing From header (and the pool has no from_email)"
    assert await stored_count(client, tenant) == 2
