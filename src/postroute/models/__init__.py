"""SQLAlchemy tables. Import from here so Alembic sees every table."""

from postroute.models.accounts import Account, ApiKey, IpCredential, User
from postroute.models.base import Base
from postroute.models.domains import Domain, DomainKey, DomainRecord
from postroute.models.messages import (
    DeliveryAttempt,
    IdempotencyKey,
    Message,
    MessageContent,
    MessageEvent,
    MessageTag,
)
from postroute.models.pools import PoolDailyUsage, SmtpPool
from postroute.models.queue import Delivery
from postroute.models.suppressions import Suppression

__all__ = [
    "Account",
    "ApiKey",
    "Base",
    "Delivery",
    "DeliveryAttempt",
    "Domain",
    "DomainKey",
    "DomainRecord",
    "IdempotencyKey",
    "IpCredential",
    "Message",
    "MessageContent",
    "MessageEvent",
    "MessageTag",
    "PoolDailyUsage",
    "SmtpPool",
    "Suppression",
    "User",
]
