"""The submit path's checks, pure: every problem of every draft at once, the pool a
draft goes to, the From a pool gives, and the rows described (guarded by the pools'
stamp)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postroute import errors, events
from postroute.db.changes import Insert
from postroute.messages import ingest, service
from postroute.messages.planning import AccountState, Draft, Recipient, plan
from postroute.messages.schemas import SendRequest
from postroute.models import SmtpPool

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def pool(pool_id: str, **kw: object) -> SmtpPool:
    fields: dict[str, object] = {"name": pool_id, "is_active": True, "is_default": False}
    fields.update(kw)
    return SmtpPool(id=pool_id, **fields)


def pools(*found: SmtpPool) -> AccountState:
    return AccountState("acct_1", list(found), (("stamp",),))


def http(**kw: object) -> Draft:
    body = {"from": "shop@example.com", "to": ["a@example.org"], "subject": "Hi", "text": "x"}
    body.update(kw)
    return service.drafts([SendRequest.model_validate(body)])[0]


def smtp(raw: bytes, rcpt: str = "a@example.org") -> Draft:
    return ingest.draft(ingest.parse(raw, NOW), [rcpt], max_recipients=10)


def refused(drafts: list[Draft], found: AccountState, *, batch: bool = False) -> errors.DomainError:
    with pytest.raises(errors.DomainError) as raised:
        plan("acct_1", drafts, found, NOW, batch=batch)
    return raised.value


def test_a_draft_goes_to_the_default_pool_and_its_rows_are_described() -> None:
    found = pools(pool("smtp_A"), pool("smtp_B", is_default=True))
    planned = plan("acct_1", [http(to=["a@example.org", "b@example.org"])], found, NOW, batch=False)
    (reply,) = planned.replies
    assert [m.to for m in reply.messages] == ["a@example.org", "b@example.org"]
    pools_guard, suppressions_guard = planned.changes.guards
    assert pools_guard.rows == [("stamp",)]  # written only while the pools are as planned with
    # and while none of the recipients is suppressed (the plan read nothing: it assumed so)
    assert suppressions_guard.rows == []
    inserts = {s.table.name: s.rows for s in planned.changes.steps if isinstance(s, Insert)}
    assert list(inserts) == ["message_contents", "messages", "deliveries", "message_events"]
    assert {m["pool_id"] for m in inserts["messages"]} == {"smtp_B"}
    assert [e["type"] for e in inserts["message_events"]] == [events.QUEUED] * 2
    assert len(inserts["message_contents"]) == 1  # the content once for all recipients


def test_a_batch_reports_every_problem_of_every_message_at_once() -> None:
    error = refused(
        [http(), http(pool="nope"), http(pool="nope2")], pools(pool("smtp_A")), batch=True
    )
    assert error.code == errors.POOL_NOT_FOUND
    assert [d["field"] for d in error.details] == ["messages[1].pool", "messages[2].pool"]


def test_no_pool_at_all_and_a_pool_without_from_email() -> None:
    assert refused([http()], pools()).code == errors.NO_POOL_CONFIGURED
    error = refused([http(**{"from": None})], pools(pool("smtp_A")))
    assert error.details == [{"field": "from", "message": "required: the pool has no from_email"}]
    found = pools(pool("smtp_A", from_email="noreply@example.com"))
    planned = plan("acct_1", [http(**{"from": None})], found, NOW, batch=False)
    (message,) = [s for s in planned.changes.steps if isinstance(s, Insert)][1].rows
    assert message["from_email"] == "noreply@example.com"


def test_smtp_drafts_use_their_own_field_names_and_order() -> None:
    raw = b"X-Postroute-Pool: nope\r\nTo: a@example.org\r\n\r\nHello.\r\n"
    error = refused([smtp(raw)], pools(pool("smtp_A")))
    assert error.message == (
        "missing From header (and the pool has no from_email); missing Subject header; "
        "X-Postroute-Pool: no SMTP pool with id or name 'nope'"
    )
    assert error.code == errors.VALIDATION_FAILED  # several problems


def test_a_smtp_draft_without_from_takes_the_pools_and_adds_the_header() -> None:
    raw = b"To: a@example.org\r\nSubject: Hi\r\n\r\nHello.\r\n"
    found = pools(pool("smtp_A", from_email="noreply@example.com"))
    planned = plan("acct_1", [smtp(raw)], found, NOW, batch=False)
    content = next(s for s in planned.changes.steps if isinstance(s, Insert)).rows[0]["mime"]
    assert content.startswith(b"From: noreply@example.com\r\n")


def test_recipients_are_kept_as_given() -> None:
    draft = http(to=["a@example.org"], cc=["c@example.org"], bcc=["b@example.org"])
    assert draft.recipients == [
        Recipient("to", "a@example.org"),
        Recipient("cc", "c@example.org"),
        Recipient("bcc", "b@example.org"),
    ]


def test_a_required_verified_domain_is_checked_on_the_path() -> None:
    strict = AccountState(
        "acct_1", [pool("smtp_A")], (("stamp",),), True, frozenset({"verified.example"}), ((), ())
    )
    error = refused([http()], strict)
    assert error.code == errors.DOMAIN_NOT_VERIFIED
    assert error.details[0]["field"] == "from" and "example.com" in error.details[0]["message"]
    assert plan("acct_1", [http(**{"from": "shop@verified.example"})], strict, NOW, batch=False)
    raw = b"From: shop@example.com\r\nTo: a@example.org\r\nSubject: Hi\r\n\r\nHello.\r\n"
    smtp_error = refused([smtp(raw)], strict)
    assert smtp_error.message.startswith("the From domain example.com is not verified")
    planned = plan("acct_1", [http()], pools(pool("smtp_A")), NOW, batch=False)  # not required
    assert len(planned.changes.guards) == 2  # pools and suppressions: no domains read
