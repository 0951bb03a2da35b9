"""Linear backoff: attempt n waits n * base; after the last attempt, the message is dropped."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_seconds: float = 60.0

    def next_attempt(self, attempts_made: int, now: datetime) -> datetime | None:
        """When to try again after ``attempts_made`` failed tries; None when exhausted."""
        if attempts_made >= self.attempts:
            return None
        return now + timedelta(seconds=attempts_made * self.base_seconds)
