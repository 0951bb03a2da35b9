"""Page cursors: the last id of a page as base64url, read back only when it is shaped
like an id of the expected kind (what reaches SQL is an id, or nothing)."""

from __future__ import annotations

import base64
import binascii
import re

from postroute import errors

PATTERN = r"^[A-Za-z0-9_-]{1,200}$"  # what a cursor looks like, for query parameters


def encode(object_id: str) -> str:
    return base64.urlsafe_b64encode(object_id.encode()).decode().rstrip("=")


def decode(cursor: str, prefix: str) -> str:
    """The id in ``cursor``; a 422 (``ValidationFailed``) when it is not a cursor of
    ``prefix`` ids."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):  # ValueError: not ASCII, or not UTF-8 once decoded
        value = ""
    if not re.fullmatch(rf"{re.escape(prefix)}_[0-9A-V]{{26}}", value):
        raise errors.ValidationFailed(
            "invalid cursor",
            details=[{"field": "cursor", "message": "not a cursor from next_cursor"}],
        )
    return value
