"""Sending domains: their DKIM keys and the DNS records a user publishes for them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from postroute.models.base import Base

PENDING = "pending"  # never verified
VERIFIED = "verified"
FAILING = "failing"  # verified once; a required record is gone


class Domain(Base):
    __tablename__ = "domains"
    __table_args__ = (sa.UniqueConstraint("account_id", "name", name="uq_domains_account_name"),)

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(253), index=True)  # ASCII (punycode), lower
    status: Mapped[str] = mapped_column(sa.String(10))
    return_path_sub: Mapped[str] = mapped_column(sa.String(63))
    return_path_verified: Mapped[bool] = mapped_column(default=False)
    tracking_sub: Mapped[str | None] = mapped_column(sa.String(63))
    tracking_verified: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    verified_at: Mapped[datetime | None]
    last_checked_at: Mapped[datetime | None]
    next_check_at: Mapped[datetime | None] = mapped_column(index=True)


ACTIVE = "active"  # signs
RETIRED = "retired"  # no longer signs; still published until retire_at


class DomainKey(Base):
    """A DKIM key: ``pending`` (published, not signing yet), ``active`` or ``retired``."""

    __tablename__ = "domain_keys"
    __table_args__ = (
        sa.UniqueConstraint("domain_id", "selector", name="uq_domain_keys_domain_selector"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    domain_id: Mapped[str] = mapped_column(
        sa.ForeignKey("domains.id", ondelete="CASCADE"), index=True
    )
    selector: Mapped[str] = mapped_column(sa.String(63))
    algorithm: Mapped[str] = mapped_column(sa.String(8))  # rsa | ed25519
    private_key_enc: Mapped[str] = mapped_column(sa.Text)  # SecretBox, like relay passwords
    public_key: Mapped[str] = mapped_column(sa.Text)  # base64, as in the DNS record's p=
    state: Mapped[str] = mapped_column(sa.String(8))
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    retire_at: Mapped[datetime | None]


class DomainRecord(Base):
    """One DNS record to publish, and what the last check found."""

    __tablename__ = "domain_records"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    domain_id: Mapped[str] = mapped_column(
        sa.ForeignKey("domains.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(sa.String(24))
    type: Mapped[str] = mapped_column(sa.String(8))  # TXT | MX | CNAME
    name: Mapped[str] = mapped_column(sa.String(255))
    value: Mapped[str] = mapped_column(sa.Text)
    required: Mapped[bool]
    status: Mapped[str] = mapped_column(sa.String(16))
    found: Mapped[str | None] = mapped_column(sa.Text)
    checked_at: Mapped[datetime | None]
