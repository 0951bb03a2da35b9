"""What one relay attempt came to. A sender returns one of these; it never raises."""

from __future__ import annotations

import re
from dataclasses import dataclass

_QUEUE_ID = (
    re.compile(r"queued as\s+<?([A-Za-z0-9._@-]+)>?", re.IGNORECASE),  # Postfix, Exim, aiosmtpd
    re.compile(r"^(?:\d\.\d\.\d\s+)?Ok\s+<?([A-Za-z0-9._@-]{8,})>?\s*$", re.IGNORECASE),  # SES
)


def relay_queue_id(reply_text: str) -> str | None:
    """The relay's own queue id from a ``250 ... queued as X`` style reply."""
    for pattern in _QUEUE_ID:
        found = pattern.search(reply_text)
        if found:
            return found.group(1)
    return None


@dataclass(frozen=True)
class Sent:
    code: int
    text: str

    @property
    def queue_id(self) -> str | None:
        return relay_queue_id(self.text)


@dataclass(frozen=True)
class Deferred:
    """A temporary 4xx for this message: retry later."""

    code: int
    text: str


@dataclass(frozen=True)
class Bounced:
    """A permanent 5xx for this message: no retry."""

    code: int
    text: str


@dataclass(frozen=True)
class RelayDown:
    """The relay itself is in trouble (connect, TLS, AUTH, 421, dropped session)."""

    error_code: str
    detail: str
    smtp_code: int | None = None


@dataclass(frozen=True)
class UnknownOutcome:
    """The content went out and no reply to it came (the session was lost or timed out
    after the end of data): the relay may have taken the message. It is retried later on
    the same pool, never failed over, so that two upstreams do not both get it."""

    error_code: str
    detail: str


Outcome = Sent | Deferred | Bounced | RelayDown | UnknownOutcome

# An attempt whose worker stopped, or ran past its lease, before recording its outcome.
LEASE_LOST = UnknownOutcome(
    "lease_lost",
    "the worker holding this message stopped before recording an outcome (its lease "
    "expired, or it was stopped while sending); it may have been sent",
)


def reply_line(outcome: Outcome) -> str:
    """One line for ``last_reply`` and events: ``451 4.3.0 try later``."""
    if isinstance(outcome, RelayDown):
        prefix = f"{outcome.smtp_code} " if outcome.smtp_code else ""
        return f"{prefix}{outcome.error_code}: {outcome.detail}"
    if isinstance(outcome, UnknownOutcome):
        return f"{outcome.error_code}: {outcome.detail}"
    return f"{outcome.code} {outcome.text}"
