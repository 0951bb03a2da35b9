"""The suppression list: addresses an account does not mail (hard bounces, complaints,
unsubscribes, manual entries)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from postroute.models.base import Base


class Suppression(Base):
    __tablename__ = "suppressions"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "email", name="uq_suppressions_account_email"),
        sa.Index("ix_suppressions_account_id_id", "account_id", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"))
    # the local part as given, the domain lower-cased: ``Jane.Doe@example.com``
    email: Mapped[str] = mapped_column(sa.String(320))
    reason: Mapped[str] = mapped_column(sa.String(16))  # hard_bounce|complaint|unsubscribe|manual
    source: Mapped[str] = mapped_column(sa.String(40))  # the message id, or "api" / "import"
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
