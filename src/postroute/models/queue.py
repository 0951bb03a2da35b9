"""The delivery queue: one row per message still to be relayed.

``next_attempt_at`` doubles as the lease expiry while a worker holds the row, so
"due" and "lease expired" are one indexed condition: ``next_attempt_at <= now``.
Rows are deleted once the message reaches a final state.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from postroute.models.base import Base

QUEUED = "queued"  # waiting for its next attempt (next_attempt_at)
LEASED = "leased"  # claimed by a worker until next_attempt_at (its lease expiry)


class Delivery(Base):
    __tablename__ = "deliveries"

    message_id: Mapped[str] = mapped_column(
        sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(sa.String(40))
    pool_id: Mapped[str | None] = mapped_column(sa.String(40))
    state: Mapped[str] = mapped_column(sa.String(8))  # queued | leased
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(80))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
