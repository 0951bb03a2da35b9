"""API shapes for API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

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


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str = Field(examples=["acct_0123456789ABCDEFGHIJKLMNOP"])
    name: str = Field(examples=["default"])
    require_verified_domain: bool = Field(
        description="From must be on a verified sending domain (else `domain_not_verified`). "
        "On for new accounts."
    )
    track_opens: bool = Field(description="Default of `track_opens` for sends that omit it.")
    track_clicks: bool = Field(description="Default of `track_clicks` for sends that omit it.")
    unsubscribe_header: bool = Field(
        description="Default of `unsubscribe` (List-Unsubscribe headers) for sends that omit "
        "it. Off for new accounts: most transactional mail must not carry it."
    )
    created_at: datetime = Field(description="ISO 8601, UTC.")


# A setting that may be left out, but is true or false when given: the schema offers no
# null (unset, the field holds None).
Setting = Annotated[bool | None, WithJsonSchema({"type": "boolean"})]


class AccountUpdate(BaseModel):
    """Only the fields given change; a field given is true or false."""

    model_config = ConfigDict(extra="forbid", strict=True)
    require_verified_domain: Setting = Field(
        default=None, description="From must be on a verified sending domain."
    )
    track_opens: Setting = Field(default=None, description="Default for sends.")
    track_clicks: Setting = Field(default=None, description="Default for sends.")
    unsubscribe_header: Setting = Field(
        default=None, description="Default of `unsubscribe` for sends."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        """A field given is true or false: ``null`` would silently change nothing."""
        if value is None:
            raise PydanticCustomError(
                "bool_type", "must be true or false (leave the field out to keep it as it is)"
            )
        return value
