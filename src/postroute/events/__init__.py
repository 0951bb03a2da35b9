"""Events: their names (:mod:`.names`, re-exported here), the one way to write them
(:func:`.record.record`) and their public shape (:mod:`.schemas`)."""

from postroute.events.names import (
    BOUNCED,
    CLICKED,
    COMPLAINED,
    DEFERRED,
    DELIVERED,
    DROPPED,
    MESSAGE_EVENTS,
    OPENED,
    PROCESSED,
    QUEUED,
    SENT,
    UNSUBSCRIBED,
)

__all__ = [
    "BOUNCED",
    "CLICKED",
    "COMPLAINED",
    "DEFERRED",
    "DELIVERED",
    "DROPPED",
    "MESSAGE_EVENTS",
    "OPENED",
    "PROCESSED",
    "QUEUED",
    "SENT",
    "UNSUBSCRIBED",
]
