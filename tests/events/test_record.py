"""``events.record``: the only way to write an event, into the caller's write (one
multi-row insert); and the one public shape an event is shown in."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from postroute import events
from postroute.db.changes import Changes, Insert
from postroute.events.record import Event, record
from postroute.runtime import Runtime
from tests.conftest import Tenant
from tests.delivery.conftest import add_pool, message, send

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_events_join_one_insert_and_get_ids_in_order() -> None:
    changes = Changes()
    first = record(changes, [Event(events.QUEUED, "acct_1", "msg_1", NOW, {"a": 1})])
    more = record(changes, [Event(events.SENT, "acct_1", "msg_1", NOW, {}),
                            Event(events.BOUNCED, "acct_1", "msg_2", NOW, {})])  # fmt: skip
    (step,) = changes.steps
    assert isinstance(step, Insert) and step.table.name == "message_events"
    assert [r["type"] for r in step.rows] == ["queued", "sent", "bounced"]
    assert [r["id"] for r in step.rows] == first + more
    assert all(i.startswith("evt_") for i in first + more) and len(set(first + more)) == 3


async def test_the_timeline_shows_events_in_their_public_shape(
    runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    pool = await add_pool(client, tenant, 2525)
    sent = await send(client, tenant, tags=["receipt"], metadata={"order": "1234"})
    detail = await message(client, tenant, sent["messages"][0]["id"])
    (queued,) = detail["events"]
    assert set(queued) == {
        "id", "type", "created_at", "message_id", "account_id", "recipient", "pool_id",
        "tags", "metadata", "data",
    }  # fmt: skip
    assert queued["type"] == "queued" and queued["message_id"] == detail["id"]
    assert queued["account_id"] == tenant.account_id and queued["recipient"] == detail["to"]
    assert queued["pool_id"] == pool["id"]
    assert (queued["tags"], queued["metadata"]) == (["receipt"], {"order": "1234"})
