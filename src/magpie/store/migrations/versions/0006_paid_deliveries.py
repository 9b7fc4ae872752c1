"""Paid messages counted per delivery: the day a delivery's reservation counts on, so releasing it
(the gateway refused the message) is exact and happens at most once, whoever records it and whenever.

Revision ID: 0006_paid_deliveries
Revises: 0005_phone_channels
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_paid_deliveries"
down_revision = "0005_phone_channels"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        # Set when the delivery reserved one of the environment's paid messages of that day (YYYY-MM-DD).
        batch.add_column(sa.Column("paid_day", sa.String(10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("paid_day")
