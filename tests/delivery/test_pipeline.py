"""The pipeline's steps, each on its own: ``choose_pool`` passes a take on or stops
(hold, drop), ``prepare`` makes the job (a failover swaps the pool header only),
``record`` turns a stop or the sends' reports into rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroute import events
from postroute.delivery import outcomes, pipeline
from postroute.delivery.dispatch import Budget, Hold, Take
from postroute.delivery.flight import InFlight
from postroute.delivery.health import HealthBook
from postroute.delivery.repository import Claimed, Envelope
from postroute.delivery.retry import RetryPolicy
from postroute.delivery.senders import Job, Report
from postroute.models import SmtpPool
from postroute.relay.results import Bounced, RelayDown, Sent

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CONTENT = b"From: shop@example.com\r\nSubject: Hi\r\n\r\nHello.\r\n"
POLICY = RetryPolicy(attempts=3, base_seconds=60)


def pool(pool_id: str, **kw: object) -> SmtpPool:
    fields = {"name": pool_id, "is_active": True, "max_connections": 4, "daily_limit": None}
    fields.update(kw)
    return SmtpPool(id=pool_id, **fields)


def flight(attempts: int = 0, candidates: tuple[str, ...] = ("smtp_A", "smtp_B")) -> InFlight:
    claimed = Claimed("msg_1", "acct_1", None, attempts, NOW - timedelta(hours=1))
    envelope = Envelope(
        "msg_1", "acct_1", "cnt_1", "shop@example.com", "a@example.org", "<msg_1@x>", attempts, None
    )
    return InFlight(claimed, envelope, CONTENT, list(candidates))


def book() -> HealthBook:
    return HealthBook(failures_to_open=2, cooldown=timedelta(seconds=60))


def test_choose_pool_takes_the_first_usable_candidate() -> None:
    health = book()
    health.failure("smtp_A", "smtp_connection_error", NOW)
    health.failure("smtp_A", "smtp_connection_error", NOW)  # A's circuit is open
    step = pipeline.choose_pool(
        flight(), [pool("smtp_A"), pool("smtp_B")], health, Budget({}), {}, NOW, NOW
    )
    assert step == Take("smtp_B", False)


def test_choose_pool_holds_when_no_pool_can_take_it_now() -> None:
    budget = Budget({"smtp_A": 0})  # the daily limit is reached
    step = pipeline.choose_pool(
        flight(), [pool("smtp_A", daily_limit=10)], book(), budget, {}, NOW, NOW + timedelta(days=3)
    )
    assert isinstance(step, Hold) and "daily limit" in step.reason
    assert step.until == datetime(2026, 12, 5, tzinfo=UTC)  # the next UTC midnight


def test_choose_pool_drops_what_no_pool_can_take_before_the_deadline() -> None:
    budget = Budget({"smtp_A": 0})
    step = pipeline.choose_pool(
        flight(), [pool("smtp_A", daily_limit=10)], book(), budget, {}, NOW, NOW
    )
    assert isinstance(step, pipeline.Dropped)
    assert step.reason.startswith("no pool could take it before the queue lifetime ran out")


def test_prepare_makes_the_job_and_a_failover_swaps_the_pool_header() -> None:
    fl = flight()
    first = pipeline.prepare(fl, Take("smtp_A", True))
    assert (first.pool_id, first.sender, first.recipient, first.reserved) == (
        "smtp_A", "shop@example.com", "a@example.org", True
    )  # fmt: skip
    assert b"X-Postroute-Pool-ID: smtp_A\r\n" in first.data and first.data.endswith(CONTENT)
    second = pipeline.prepare(fl, Take("smtp_B", False))
    assert second.data == first.data.replace(b"smtp_A", b"smtp_B")


def report(job_pool: str, outcome: object, at: datetime = NOW) -> Report:
    job = Job("msg_1", job_pool, "shop@example.com", "a@example.org", b"", False)
    return Report(job, outcome, at - timedelta(seconds=1), at)  # type: ignore[arg-type]


def test_record_of_a_drop_finishes_the_message_without_an_attempt() -> None:
    rows = outcomes.Rows()
    pipeline.record(rows, flight(), pipeline.Dropped("gone"), NOW, POLICY, NOW)
    assert [e.type for e in rows.events] == [events.DROPPED]
    assert rows.events[0].data == {"reason": "gone"}
    assert rows.finished == ["msg_1"] and rows.attempts == []
    assert rows.messages[0]["status"] == events.DROPPED


def test_record_of_a_hold_reschedules_without_using_an_attempt() -> None:
    rows = outcomes.Rows()
    hold = Hold(NOW + timedelta(minutes=5), "pool_down", "pool A is down")
    pipeline.record(rows, flight(attempts=1), hold, NOW, POLICY, NOW + timedelta(days=1))
    assert [e.type for e in rows.events] == [events.DEFERRED]
    assert rows.rescheduled == [
        {"message_id": "msg_1", "next_attempt_at": hold.until, "attempts": 1, "pool_id": None}
    ]
    assert rows.attempts == [] and rows.finished == []


def test_record_of_sends_a_failover_then_a_success() -> None:
    fl = flight()
    fl.reports = [report("smtp_A", RelayDown("smtp_connection_error", "refused")),
                  report("smtp_B", Sent(250, "2.0.0 Ok: queued as ABC123"))]  # fmt: skip
    rows = outcomes.Rows()
    pipeline.record(rows, fl, None, NOW, POLICY, NOW + timedelta(days=1))
    assert [a["outcome"] for a in rows.attempts] == ["relay_down", "sent"]
    assert [e.type for e in rows.events] == [events.PROCESSED, events.SENT]
    sent = rows.events[1].data
    assert sent["pools_tried"] == ["smtp_A", "smtp_B"] and sent["queue_id"] == "ABC123"
    assert rows.finished == ["msg_1"] and rows.sent["smtp_B"] == 1


def test_record_of_a_bounce_is_final() -> None:
    fl = flight()
    fl.reports = [report("smtp_A", Bounced(550, "5.1.1 no such user"))]
    rows = outcomes.Rows()
    pipeline.record(rows, fl, None, NOW, POLICY, NOW + timedelta(days=1))
    assert [e.type for e in rows.events] == [events.PROCESSED, events.BOUNCED]
    assert rows.messages[0]["status"] == events.BOUNCED and rows.finished == ["msg_1"]
