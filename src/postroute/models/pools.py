"""SMTP pools (upstream relays) and their per-day counters."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from postroute.models.base import Base


class SmtpPool(Base):
    __tablename__ = "smtp_pools"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "name", name="uq_smtp_pools_account_name"),
        # At most one default pool per account, enforced by the database too.
        sa.Index(
            "uq_smtp_pools_one_default",
            "account_id",
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    host: Mapped[str] = mapped_column(sa.String(255))
    port: Mapped[int]
    username: Mapped[str | None] = mapped_column(sa.String(320))
    password_enc: Mapped[str | None] = mapped_column(sa.Text)
    encryption: Mapped[str] = mapped_column(sa.String(8))
    verify_tls: Mapped[bool] = mapped_column(default=True)
    is_active: Mapped[bool] = mapped_column(default=True)
    is_default: Mapped[bool] = mapped_column(default=False)
    priority: Mapped[int] = mapped_column(default=100)
    failover: Mapped[bool] = mapped_column(default=True)
    daily_limit: Mapped[int | None]
    rate_limit_count: Mapped[int | None]
    rate_limit_period: Mapped[str | None] = mapped_column(sa.String(8))  # "second" | "minute"
    max_connections: Mapped[int] = mapped_column(default=4)
    from_email: Mapped[str | None] = mapped_column(sa.String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    # Health, written by delivery and the connection test.
    health_state: Mapped[str] = mapped_column(sa.String(10), default="healthy")
    health_last_error: Mapped[str | None] = mapped_column(sa.Text)
    health_last_checked_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    down_until: Mapped[datetime | None]
    effective_rate: Mapped[float | None]  # per second, lowered after throttling replies


class PoolDailyUsage(Base):
    """Messages sent and throttled per pool per UTC day."""

    __tablename__ = "pool_daily_usage"

    pool_id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    sent: Mapped[int] = mapped_column(default=0)
    throttled: Mapped[int] = mapped_column(default=0)
