"""API shapes of the suppression list."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field

from postroute.kit import text as t
from postroute.kit.times import Timestamp
from postroute.models import Suppression
from postroute.suppressions.rules import REASONS

Reason = Literal["hard_bounce", "complaint", "unsubscribe", "manual"]
assert set(REASONS) == set(get_args(Reason))  # one list of reasons


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: t.EmailText = Field(max_length=320, examples=["customer@example.org"])
    reason: Literal["manual"] = Field(
        default="manual",
        description="Entries added by hand are `manual`; the others come from bounces, "
        "complaints and unsubscribes.",
    )
    expires_at: Timestamp = Field(
        default=None,
        description="When the entry stops blocking sends (ISO 8601, UTC if no zone, in the "
        "future); none: never.",
    )


class SuppressionOut(BaseModel):
    email: str = Field(
        description="The address: its local part as given, its domain in lower case.",
        examples=["Customer@example.org"],
    )
    reason: Reason
    source: str = Field(
        description="The message that caused it (`msg_...`), or `api` / `import`.",
        examples=["msg_0123456789ABCDEFGHIJKLMNOP"],
    )
    created_at: datetime
    expires_at: datetime | None = Field(description="None: it never expires.")
    active: bool = Field(description="Whether it blocks sends now (not expired).")


class SuppressionList(BaseModel):
    data: list[SuppressionOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


def suppression_out(s: Suppression, now: datetime) -> SuppressionOut:
    return SuppressionOut(
        email=s.email,
        reason=cast(Reason, s.reason),  # stored from REASONS only
        source=s.source,
        created_at=s.created_at,
        expires_at=s.expires_at,
        active=s.expires_at is None or s.expires_at > now,
    )
