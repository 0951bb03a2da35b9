"""A date-time as the API takes one: ISO 8601 only (a bare number of seconds is refused,
not read as a year), UTC when it names no zone, and within years 1-9999 once in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator


def _iso_only(value: Any) -> Any:
    """A date-time written out (``2026-12-04T09:30:00Z``), not a bare number of seconds."""
    if not isinstance(value, datetime) and (
        not isinstance(value, str) or len(value) < 10 or value[4:5] != "-"
    ):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-12-04T09:30:00Z")
    return value


def _in_utc(value: datetime | None) -> datetime | None:
    """Aware, in UTC: naive times are UTC; others are converted, which must stay within
    years 1-9999."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


Timestamp = Annotated[datetime | None, BeforeValidator(_iso_only), AfterValidator(_in_utc)]
