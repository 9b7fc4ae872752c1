"""Experiments: the arm (control or variant) each recipient of an experiment campaign was given, and
the conversions attributed to them (docs/experiments.md).

``recipients.variant`` records the arm per recipient: 0 for the control group, 1..5 for a variant.
``exposures`` keeps the same fact keyed for attribution (by user and time); ``conversions`` holds at
most one conversion per recipient of a dispatch (its primary key says so).

Revision ID: 0010_experiments
Revises: 0009_broadcast_occurrences
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_experiments"
down_revision = "0009_broadcast_occurrences"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recipients") as batch:
        batch.add_column(sa.Column("variant", sa.SmallInteger, nullable=True))
    op.create_table(
        "exposures",
        sa.Column("dispatch_id", sa.String(36), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("campaign_key", sa.Integer, nullable=False),
        # The experiment's version: a digest of its variants and control share, so that figures of a
        # changed experiment are kept apart from the old one's.
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("arm", sa.SmallInteger, nullable=False),
        sa.Column("user_key", sa.String(260), nullable=False),
        sa.Column("exposed_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_exposures_user", "exposures", ["env_id", "user_key", "exposed_at"])
    op.create_index("ix_exposures_campaign", "exposures", ["env_id", "campaign_key", "version", "arm"])
    op.create_table(
        "conversions",
        sa.Column("dispatch_id", sa.String(36), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("campaign_key", sa.Integer, nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("arm", sa.SmallInteger, nullable=False),
        sa.Column("insert_id", sa.String(128), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("converted_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_conversions_campaign", "conversions", ["env_id", "campaign_key", "version", "converted_at"])


def downgrade() -> None:
    op.drop_index("ix_conversions_campaign", table_name="conversions")
    op.drop_table("conversions")
    op.drop_index("ix_exposures_campaign", table_name="exposures")
    op.drop_index("ix_exposures_user", table_name="exposures")
    op.drop_table("exposures")
    with op.batch_alter_table("recipients") as batch:
        batch.drop_column("variant")
