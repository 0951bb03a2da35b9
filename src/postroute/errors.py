"""Domain errors and their public codes. Services raise these; the HTTP
and SMTP layers map them to status codes and replies."""

from __future__ import annotations

from typing import Any

VALIDATION_FAILED = "validation_failed"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
POOL_NOT_FOUND = "pool_not_found"
NO_POOL_CONFIGURED = "no_pool_configured"
PAYLOAD_TOO_LARGE = "payload_too_large"
RATE_LIMITED = "rate_limited"
IDEMPOTENCY_CONFLICT = "idempotency_conflict"
DOMAIN_NOT_VERIFIED = "domain_not_verified"
RECIPIENT_SUPPRESSED = "recipient_suppressed"
INTERNAL_ERROR = "internal_error"


class DomainError(Exception):
    code: str = INTERNAL_ERROR

    def __init__(
        self, message: str, *, code: str | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or []


class NotFound(DomainError):
    code = NOT_FOUND


class Conflict(DomainError):
    code = CONFLICT


class ValidationFailed(DomainError):
    code = VALIDATION_FAILED


class Unauthorized(DomainError):
    code = UNAUTHORIZED
