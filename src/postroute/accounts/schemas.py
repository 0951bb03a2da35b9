"""API shapes for API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from postroute.kit import text as v

KeyName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(v.single_line),
    v.TEXT,
]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: KeyName = Field(
        default="default",
        description="What the key is for; one line.",
        examples=["billing service"],
    )


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str = Field(examples=["key_0123456789ABCDEFGHIJKLMNOP"])
    name: str = Field(examples=["billing service"])
    prefix: str = Field(description="The key's first characters, to recognise it.")
    created_at: datetime = Field(description="ISO 8601, UTC.")
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")
    revoked_at: datetime | None = Field(description="Set once revoked: the key no longer works.")


class KeyCreated(KeyOut):
    key: str = Field(description="The API key. Shown once: store it now.", examples=["pr_live_..."])


class KeyList(BaseModel):
    data: list[KeyOut] = Field(description="Oldest first.")
