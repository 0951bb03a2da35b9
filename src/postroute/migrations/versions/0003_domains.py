"""sending domains, DKIM keys and their DNS records; accounts.require_verified_domain;
messages.mail_from; events not about one message

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "domains",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("return_path_sub", sa.String(length=63), nullable=False),
        sa.Column("return_path_verified", sa.Boolean(), nullable=False),
        sa.Column("tracking_sub", sa.String(length=63), nullable=True),
        sa.Column("tracking_verified", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_domains_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("account_id", "name", name="uq_domains_account_name"),
    )
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_domains_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_domains_name"), ["name"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_domains_next_check_at"), ["next_check_at"], unique=False
        )
    op.create_table(
        "domain_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("domain_id", sa.String(length=40), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("algorithm", sa.String(length=8), nullable=False),
        sa.Column("private_key_enc", sa.Text(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retire_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_domain_keys_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_keys")),
        sa.UniqueConstraint("domain_id", "selector", name="uq_domain_keys_domain_selector"),
    )
    with op.batch_alter_table("domain_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_domain_keys_domain_id"), ["domain_id"], unique=False)
    op.create_table(
        "domain_records",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("domain_id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=24), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("found", sa.Text(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["domains.id"],
            name=op.f("fk_domain_records_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_records")),
    )
    with op.batch_alter_table("domain_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_domain_records_domain_id"), ["domain_id"], unique=False
        )
    # Existing accounts keep sending as before: off for them (on for new accounts).
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "require_verified_domain",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mail_from", sa.String(length=320), nullable=True))
    # An event may be about an account's domain rather than one message; the type holds
    # dotted names (``domain.failing``). On SQLite this copies the table once.
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.alter_column("message_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.alter_column(
            "type", existing_type=sa.String(length=16), type_=sa.String(length=24)
        )


def downgrade() -> None:
    op.execute("DELETE FROM message_events WHERE message_id IS NULL")
    with op.batch_alter_table("message_events", schema=None) as batch_op:
        batch_op.alter_column(
            "type", existing_type=sa.String(length=24), type_=sa.String(length=16)
        )
        batch_op.alter_column("message_id", existing_type=sa.String(length=40), nullable=False)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("mail_from")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("require_verified_domain")
    op.drop_table("domain_records")
    op.drop_table("domain_keys")
    op.drop_table("domains")
