"""The health book writes a pool's row only when its health changed, or now and then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from postroute.delivery.health import REWRITE_EVERY, HealthBook

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_an_unchanged_health_is_written_again_only_after_a_while() -> None:
    book = HealthBook(failures_to_open=3, cooldown=timedelta(seconds=60))
    assert book.needs_write("p", T0)
    book.written("p", T0)
    assert not book.needs_write("p", T0 + timedelta(seconds=1))
    assert book.needs_write("p", T0 + REWRITE_EVERY)


def test_a_change_is_written_at_once() -> None:
    book = HealthBook(failures_to_open=3, cooldown=timedelta(seconds=60))
    book.written("p", T0)
    book.failure("p", "smtp_connection_error", T0)
    assert book.needs_write("p", T0 + timedelta(seconds=1))
    book.written("p", T0 + timedelta(seconds=1))
    assert book.needs_write("p", T0 + timedelta(seconds=1))  # not healthy: every batch
    book.success("p", T0 + timedelta(seconds=2))
    assert book.needs_write("p", T0 + timedelta(seconds=2))
