"""Event names, one place for code and tests."""

from __future__ import annotations

QUEUED = "queued"
PROCESSED = "processed"
SENT = "sent"
DEFERRED = "deferred"
BOUNCED = "bounced"
DROPPED = "dropped"
DELIVERED = "delivered"
OPENED = "opened"
CLICKED = "clicked"
UNSUBSCRIBED = "unsubscribed"
COMPLAINED = "complained"

MESSAGE_EVENTS = (
    QUEUED,
    PROCESSED,
    SENT,
    DEFERRED,
    BOUNCED,
    DROPPED,
    DELIVERED,
    OPENED,
    CLICKED,
    UNSUBSCRIBED,
    COMPLAINED,
)

DOMAIN_FAILING = "domain.failing"  # a verified sending domain lost a required DNS record
