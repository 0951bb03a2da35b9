"""API shapes for SMTP pools (SPEC section 3). The password is write-only."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

Encryption = Literal["tls", "ssl", "none"]
HealthState = Literal["healthy", "degraded", "down"]

_HOST = re.compile(r"^[A-Za-z0-9._\-:\[\]]+$")


class RateLimit(BaseModel):
    """Exactly one of ``per_second`` or ``per_minute``."""

    model_config = ConfigDict(extra="forbid")
    per_second: int | None = Field(default=None, ge=1, le=100_000)
    per_minute: int | None = Field(default=None, ge=1, le=6_000_000)

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

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and any(c in value for c in "\r\n\t"):
            raise ValueError("name must be a single line")
        return value


class PoolCreate(_PoolFields):
    name: str = Field(min_length=1, max_length=200)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    username: str | None = Field(default=None, min_length=1, max_length=320)
    password: SecretStr | None = Field(default=None, min_length=1, max_length=1000)
    encryption: Encryption = "tls"
    verify_tls: bool = True
    is_active: bool = True
    is_default: bool = False
    priority: int = Field(default=100, ge=0, le=1_000_000)
    failover: bool = True
    daily_limit: int | None = Field(default=None, ge=1)
    rate_limit: RateLimit | None = None
    max_connections: int = Field(default=4, ge=1, le=100)
    from_email: EmailStr | None = None

    @model_validator(mode="after")
    def _credentials_pair(self) -> Self:
        if self.username is not None and self.password is None:
            raise ValueError("password is required when username is set")
        if self.password is not None and self.username is None:
            raise ValueError("username is required when password is set")
        return self


class PoolUpdate(_PoolFields):
    """Only the fields given change. ``username: null`` removes the credentials."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = Field(default=None, min_length=1, max_length=320)
    password: SecretStr | None = Field(default=None, min_length=1, max_length=1000)
    encryption: Encryption | None = None
    verify_tls: bool | None = None
    is_active: bool | None = None
    is_default: bool | None = None
    priority: int | None = Field(default=None, ge=0, le=1_000_000)
    failover: bool | None = None
    daily_limit: int | None = Field(default=None, ge=1)
    rate_limit: RateLimit | None = None
    max_connections: int | None = Field(default=None, ge=1, le=100)
    from_email: EmailStr | None = None

    NULLABLE: frozenset[str] = frozenset({"username", "daily_limit", "rate_limit", "from_email"})

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Self:
        bad = [
            f for f in self.model_fields_set if getattr(self, f) is None and f not in self.NULLABLE
        ]
        if bad:
            raise ValueError(f"these fields cannot be null: {', '.join(sorted(bad))}")
        return self


class PoolUsage(BaseModel):
    sent_today: int
    remaining_today: int | None
    throttled_today: int


class PoolHealth(BaseModel):
    state: HealthState
    last_error: str | None
    last_checked_at: datetime | None
    effective_rate: float | None = Field(
        description="Messages per second after throttling replies (null: not slowed down)"
    )


class PoolOut(BaseModel):
    id: str
    name: str
    host: str
    port: int
    username: str | None
    password_set: bool
    encryption: Encryption
    verify_tls: bool
    is_active: bool
    is_default: bool
    priority: int
    failover: bool
    daily_limit: int | None
    rate_limit: RateLimit | None
    max_connections: int
    from_email: str | None
    created_at: datetime
    updated_at: datetime
    usage: PoolUsage
    health: PoolHealth


class PoolList(BaseModel):
    data: list[PoolOut]


class PoolTestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipient: EmailStr | None = None


class PoolTestError(BaseModel):
    code: str
    detail: str


class PoolTestResult(BaseModel):
    success: bool
    message: str
    latency_ms: int
    error: PoolTestError | None
