"""Messages handed to each gateway per minute: ``gateway_sends``.

The environment's ``gatewayRatePerMinute`` holds for everything it sends through a gateway, every
broadcast occurrence and trigger send together, in whichever worker process: the reserve stage
counts each minute's deliveries in one row per environment, gateway and minute, locked while it
counts (docs/broadcasts.md#throttle). Rows of past minutes are deleted as new minutes begin.

Revision ID: 0014_gateway_sends
Revises: 0013_user_reach
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_gateway_sends"
down_revision = "0013_user_reach"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_sends",
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("gateway", sa.String(32), nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("env_id", "gateway", "minute"),
    )


def downgrade() -> None:
    op.drop_table("gateway_sends")
