"""The suppression guard of a submission: one statement per power of two of addresses, so
that the SQLite path compiles it once (not once per SMTP message), padded with an address
no entry can have."""

from __future__ import annotations

from datetime import UTC, datetime

from postroute.db.changes import Changes
from postroute.suppressions import repository

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def guards(emails: list[str], suppressed: list[str]) -> Changes:
    changes = Changes()
    repository.guard_recipients(changes, "acct_1", emails, suppressed, NOW)
    return changes


def test_the_same_statement_serves_every_submission_of_a_size() -> None:
    (one,) = guards(["a@example.org"], []).guards
    (other,) = guards(["b@example.org"], ["b@example.org"]).guards
    assert one.stmt is other.stmt
    assert (one.rows, other.rows) == ([], [("b@example.org",)])
    assert other.params == {"account_id": "acct_1", "now": NOW, "e0": "b@example.org"}


def test_sizes_round_up_to_a_power_of_two_padded_with_an_empty_address() -> None:
    (three,) = guards(["c@x.org", "a@x.org", "b@x.org"], ["b@x.org"]).guards
    (four,) = guards(["a@x.org", "b@x.org", "c@x.org", "d@x.org"], []).guards
    assert three.stmt is four.stmt
    assert three.params is not None
    assert [three.params[f"e{i}"] for i in range(4)] == ["a@x.org", "b@x.org", "c@x.org", ""]
    assert three.rows == [("b@x.org",)]
