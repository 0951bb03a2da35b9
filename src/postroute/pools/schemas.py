"""API shapes for SMTP pools. The password is write-only.

Integers are bounded by what the database columns hold (32-bit) and what makes sense;
text fields are one line (no control character but tab), as checked for mail headers.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic.json_schema import SkipJsonSchema

from postroute.kit import text as v

Encryption = Literal["tls", "ssl", "none"]
HealthState = Literal["healthy", "degraded", "down"]
INT32_MAX = 2_147_483_647  # an INTEGER column on PostgreSQL

_HOST = re.compile(r"^[A-Za-z0-9._\-:\[\]]+$")


# One line of text, not blank.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(v.single_line), v.TEXT
]
UserName = Annotated[
    str, StringConstraints(min_length=1, max_length=320), AfterValidator(v.single_line), v.TEXT
]
Host = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Port = Annotated[int, Field(ge=1, le=65535)]
Priority = Annotated[int, Field(ge=0, le=1_000_000)]
Connections = Annotated[int, Field(ge=1, le=100)]
DailyLimit = Annotated[int, Field(ge=1, le=INT32_MAX)]


def _secret_line(value: SecretStr) -> SecretStr:
    v.single_line(value.get_secret_value())  # its message never shows the value
    return value


Secret = Annotated[SecretStr, Field(min_length=1, max_length=1000), AfterValidator(_secret_line)]
_ENCRYPTION = "`tls`: STARTTLS required; `ssl`: implicit TLS; `none`: plain text."
_DAILY = "Messages per UTC day (resets at 00:00 UTC); null: no limit."
_CONNECTIONS = "Concurrent SMTP sessions to this relay."
_PRIORITY = "Failover order: lower first."
_VERIFY = "Check the relay's certificate."
_ACTIVE = "Inactive pools are never used."
_DEFAULT = "Used when a send names no pool; one per account."
_FAILOVER = "May its mail move to other pools when it is down."
_RATE = "At most this many messages per second or per minute; null: no limit."
_FROM = "From of sends that give none."
_USER = "For SMTP AUTH; null: the relay takes mail without AUTH."
_WHEN = "ISO 8601, UTC."


def _unset(**kwargs: Any) -> Any:
    """A PATCH field that may be left out but not set to null: no ``default`` shown."""

    def drop_default(schema: dict[str, Any]) -> None:
        schema.pop("default", None)

    return Field(default=None, json_schema_extra=drop_default, **kwargs)


def _integer(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"type": "integer"}}}


class RateLimit(BaseModel):
    """Exactly one of `per_second` or `per_minute` (the other absent or null)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [_integer("per_second"), _integer("per_minute")]},
    )
    per_second: int | None = Field(default=None, ge=1, le=100_000, examples=[14])
    per_minute: int | None = Field(default=None, ge=1, le=6_000_000, examples=[120])

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.per_second is None) == (self.per_minute is None):
            raise ValueError("give exactly one of per_second or per_minute")
        return self


class _PoolFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("host", check_fields=False)
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not _HOST.match(value):
            raise ValueError("host must be a hostname or an IP address")
        return value


_STR: JsonDict = {"type": "string"}
_CREDENTIALS_PAIR: JsonDict = {
    "anyOf": [
        {"required": ["username", "password"], "properties": {"username": _STR, "password": _STR}},
        {"properties": {"username": {"type": "null"}, "password": {"type": "null"}}},
    ]
}


class PoolCreate(_PoolFields):
    """A relay. `username` and `password` go together (both, or neither for a relay that
    takes mail without AUTH)."""

    model_config = ConfigDict(json_schema_extra=_CREDENTIALS_PAIR)

    name: Name = Field(examples=["ses"])
    host: Host = Field(examples=["email-smtp.eu-west-1.amazonaws.com"])
    port: Port = Field(examples=[587])
    username: UserName | None = Field(default=None, description=_USER, examples=["AKIA..."])
    password: Secret | None = Field(
        default=None, description="Write-only; stored encrypted.", examples=["relay-password"]
    )
    encryption: Encryption = Field(default="tls", description=_ENCRYPTION)
    verify_tls: bool = Field(default=True, description=_VERIFY)
    is_active: bool = Field(default=True, description=_ACTIVE)
    is_default: bool = Field(default=False, description=_DEFAULT)
    priority: Priority = Field(default=100, description=_PRIORITY)
    failover: bool = Field(default=True, description=_FAILOVER)
    daily_limit: DailyLimit | None = Field(default=None, description=_DAILY, examples=[50000])
    rate_limit: RateLimit | None = Field(default=None, description=_RATE)
    max_connections: Connections = Field(default=4, description=_CONNECTIONS)
    from_email: EmailStr | None = Field(
        default=None, description=_FROM, examples=["noreply@example.com"]
    )

    @model_validator(mode="after")
    def _credentials_pair(self) -> Self:
        if self.username is not None and self.password is None:
            raise ValueError("password is required when username is set")
        if self.password is not None and self.username is None:
            raise ValueError("username is required when password is set")
        return self


class PoolUpdate(_PoolFields):
    """Only the fields given change. `username: null` removes the credentials."""

    name: Name | SkipJsonSchema[None] = _unset(examples=["ses"])
    host: Host | SkipJsonSchema[None] = _unset(examples=["smtp.example.net"])
    port: Port | SkipJsonSchema[None] = _unset(examples=[465])
    username: UserName | None = Field(default=None, description=f"{_USER} Removes the password.")
    password: Secret | SkipJsonSchema[None] = _unset(description="Write-only.")
    encryption: Encryption | SkipJsonSchema[None] = _unset(description=_ENCRYPTION)
    verify_tls: bool | SkipJsonSchema[None] = _unset(description=_VERIFY)
    is_active: bool | SkipJsonSchema[None] = _unset(description=_ACTIVE)
    is_default: bool | SkipJsonSchema[None] = _unset(description=_DEFAULT)
    priority: Priority | SkipJsonSchema[None] = _unset(description=_PRIORITY)
    failover: bool | SkipJsonSchema[None] = _unset(description=_FAILOVER)
    daily_limit: DailyLimit | None = Field(default=None, description=_DAILY)
    rate_limit: RateLimit | None = Field(default=None, description=_RATE)
    max_connections: Connections | SkipJsonSchema[None] = _unset(description=_CONNECTIONS)
    from_email: EmailStr | None = Field(default=None, description=_FROM)

    NULLABLE: ClassVar[frozenset[str]] = frozenset(
        {"username", "daily_limit", "rate_limit", "from_email"}
    )

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Self:
        bad = [
            f for f in self.model_fields_set if getattr(self, f) is None and f not in self.NULLABLE
        ]
        if bad:
            raise ValueError(f"these fields cannot be null: {', '.join(sorted(bad))}")
        return self


class PoolUsage(BaseModel):
    sent_today: int = Field(description="Sent through this pool today (UTC).")
    remaining_today: int | None = Field(description="Left of `daily_limit`; null: no limit.")
    throttled_today: int = Field(description="Throttling replies from the relay today.")


class PoolHealth(BaseModel):
    state: HealthState = Field(description="`down`: not used until a probe succeeds.")
    last_error: str | None = Field(examples=["smtp_auth_error: 535 5.7.8 Authentication failed"])
    last_checked_at: datetime | None = Field(description=_WHEN)
    effective_rate: float | None = Field(
        description="Messages per second after throttling replies (null: not slowed down)"
    )


class PoolOut(BaseModel):
    id: str = Field(examples=["smtp_0123456789ABCDEFGHIJKLMNOP"])
    name: str = Field(examples=["ses"])
    host: str = Field(examples=["email-smtp.eu-west-1.amazonaws.com"])
    port: int = Field(examples=[587])
    username: str | None = Field(description=_USER)
    password_set: bool = Field(description="A password is stored (it is never shown).")
    encryption: Encryption = Field(description=_ENCRYPTION)
    verify_tls: bool = Field(description=_VERIFY)
    is_active: bool = Field(description=_ACTIVE)
    is_default: bool = Field(description=_DEFAULT)
    priority: int = Field(description=_PRIORITY)
    failover: bool = Field(description=_FAILOVER)
    daily_limit: int | None = Field(description=_DAILY)
    rate_limit: RateLimit | None = Field(description=_RATE)
    max_connections: int = Field(description=_CONNECTIONS)
    from_email: str | None = Field(description=_FROM)
    created_at: datetime = Field(description=_WHEN)
    updated_at: datetime = Field(description=_WHEN)
    usage: PoolUsage
    health: PoolHealth


class PoolList(BaseModel):
    data: list[PoolOut] = Field(description="By priority, then age.")


class PoolTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipient: EmailStr | None = Field(
        default=None, description="Also send a test message to this address."
    )


class PoolTestError(BaseModel):
    code: str = Field(
        description="`smtp_connection_error`, `smtp_tls_error`, `smtp_auth_error`, "
        "`smtp_timeout` or `smtp_rejected`.",
        examples=["smtp_auth_error"],
    )
    detail: str = Field(description="The relay's reply or the network error.")


class PoolTestResult(BaseModel):
    success: bool = Field(description="The relay took the session (and the test message).")
    message: str = Field(examples=["Connected to smtp.example.net:587 (STARTTLS, authenticated)"])
    latency_ms: int = Field(description="How long the test took.")
    error: PoolTestError | None = Field(description="Why it failed; null on success.")
