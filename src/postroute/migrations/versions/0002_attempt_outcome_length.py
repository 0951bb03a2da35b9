"""delivery_attempts.outcome holds ``unknown_outcome`` (15 characters)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce VARCHAR lengths: nothing to change there (and no copy of
    # the table, which changing a column's type takes on SQLite).
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "delivery_attempts",
        "outcome",
        existing_type=sa.String(length=12),
        type_=sa.String(length=16),
        existing_nullable=False,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("UPDATE delivery_attempts SET outcome = 'unknown' WHERE length(outcome) > 12")
    op.alter_column(
        "delivery_attempts",
        "outcome",
        existing_type=sa.String(length=16),
        type_=sa.String(length=12),
        existing_nullable=False,
    )
