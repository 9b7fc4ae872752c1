"""Kakao and SMS: the channel of campaigns, dispatches and deliveries, gateway reports, paid-message
counts per day, and a blind index of phone numbers (so a gateway's 080 opt-out finds its user without
decrypting every number).

Revision ID: 0005_phone_channels
Revises: 0004_profiles_fillfactor
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_phone_channels"
down_revision = "0004_profiles_fillfactor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("channel", sa.String(8), nullable=False, server_default="push"))
    op.add_column("dispatches", sa.Column("channel", sa.String(8), nullable=False, server_default="push"))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("channel", sa.String(8), nullable=False, server_default="push"))
        # SMS, LMS, MMS, alimtalk or brand, and the size in EUC-KR bytes of a text message.
        batch.add_column(sa.Column("kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("size_bytes", sa.Integer, nullable=True))
        # Set before a batch goes to a gateway: a retry after a crash resends exactly this batch,
        # asking the gateway first, so nobody is sent to twice.
        batch.add_column(sa.Column("batch_key", sa.String(64), nullable=True))
        # The gateway's final word after acceptance: delivered to the phone or not, with its code.
        batch.add_column(sa.Column("delivered_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("report_code", sa.String(32), nullable=True))
    op.create_index(
        "ix_deliveries_reports",
        "deliveries",
        ["provider", "status", "report_code"],
        sqlite_where=sa.text("channel <> 'push'"),
        postgresql_where=sa.text("channel <> 'push'"),
    )
    op.add_column("marketing_sends", sa.Column("channel", sa.String(8), nullable=False, server_default="push"))
    op.create_table(
        "paid_messages",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "phone_index",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("phone_hmac", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(256), primary_key=True),
    )
    op.create_index("ix_phone_index_user", "phone_index", ["env_id", "user_id"])


def downgrade() -> None:
    op.drop_table("phone_index")
    op.drop_table("paid_messages")
    op.drop_column("marketing_sends", "channel")
    op.drop_index("ix_deliveries_reports", "deliveries")
    with op.batch_alter_table("deliveries") as batch:
        for column in ("report_code", "delivered_at", "batch_key", "size_bytes", "kind", "channel"):
            batch.drop_column(column)
    op.drop_column("dispatches", "channel")
    op.drop_column("campaigns", "channel")
