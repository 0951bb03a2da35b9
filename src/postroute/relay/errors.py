"""Error codes for upstream relay trouble (API `error.code` values and pool health)."""

from __future__ import annotations

from typing import Final

SMTP_CONNECTION_ERROR: Final = "smtp_connection_error"
SMTP_TLS_ERROR: Final = "smtp_tls_error"
SMTP_AUTH_ERROR: Final = "smtp_auth_error"
SMTP_TIMEOUT: Final = "smtp_timeout"
SMTP_REJECTED: Final = "smtp_rejected"
SMTP_RATE_LIMIT: Final = "smtp_rate_limit"

ALL_CODES: Final = frozenset(
    {
        SMTP_CONNECTION_ERROR,
        SMTP_TLS_ERROR,
        SMTP_AUTH_ERROR,
        SMTP_TIMEOUT,
        SMTP_REJECTED,
        SMTP_RATE_LIMIT,
    }
)
