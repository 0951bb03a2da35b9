"""Path and query parameters shared by the routers, with the limits the database holds."""

from __future__ import annotations

from typing import Any

from fastapi import Path

from postroute.kit.text import NO_CONTROL_PATTERN
from postroute.kit.times import Timestamp

# Ids are a prefix and 26 base32hex characters (``smtp_01K9...``); anything shaped like an
# id is looked up (and may be a 404), anything else is a 422.
ID_PATTERN = r"^[A-Za-z0-9_]{1,64}$"
# Query text compared with stored values: one line, within the longest column (320).
TEXT_PATTERN = NO_CONTROL_PATTERN
TEXT_MAX = 320
__all__ = ["ID_PATTERN", "TEXT_MAX", "TEXT_PATTERN", "Timestamp", "object_id"]


def object_id(what: str, example: str) -> Any:
    """``Path`` of an object id: ``pool_id: Annotated[str, object_id("pool", "smtp_...")]``."""
    return Path(
        pattern=ID_PATTERN, description=f"The {what}'s id.", examples=[example], max_length=64
    )
