"""Path and query parameters shared by the routers, with the limits the database holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, BeforeValidator

from postroute.kit.text import NO_CONTROL_PATTERN

# Ids are a prefix and 26 base32hex characters (``smtp_01K9...``); anything shaped like an
# id is looked up (and may be a 404), anything else is a 422.
ID_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
# Query text compared with stored values: one line, within the longest column (320).
TEXT_PATTERN = NO_CONTROL_PATTERN
TEXT_MAX = 320


def object_id(what: str, example: str) -> Any:
    """``Path`` of an object id: ``pool_id: Annotated[str, object_id("pool", "smtp_...")]``."""
    return Path(
        pattern=ID_PATTERN, description=f"The {what}'s id.", examples=[example], max_length=64
    )


def _iso_only(value: Any) -> Any:
    """A date-time written out (``2026-12-04T09:30:00Z``), not a bare number of seconds."""
    if isinstance(value, str) and (len(value) < 10 or value[4:5] != "-"):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-12-04T09:30:00Z")
    return value


def _in_utc(value: datetime | None) -> datetime | None:
    """Naive times are UTC; others are converted, which must stay within years 1-9999."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


Timestamp = Annotated[datetime | None, BeforeValidator(_iso_only), AfterValidator(_in_utc)]
