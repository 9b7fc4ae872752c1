"""Broadcasts: one row per occurrence of a scheduled campaign (UNIQUE per campaign and slot, so that
any number of schedulers create it once), the users each occurrence planned (each at most once), and
the dispatches planning wrote them into.

Revision ID: 0009_broadcast_occurrences
Revises: 0008_recipients_by_user
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_broadcast_occurrences"
down_revision = "0008_recipients_by_user"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broadcast_occurrences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("campaign_key", sa.Integer, nullable=False),
        # The schedule slot (epoch ms); a "send now" or a test send takes the time it was asked.
        sa.Column("slot_ms", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # SCHEDULED | NOW | TEST
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        # Planning: the last user id written into a dispatch (keyset), and who plans now.
        sa.Column("cursor", sa.String(256), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
        sa.Column("planned", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unreachable", sa.Text, nullable=False, server_default="{}"),  # reason -> users
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("planned_at", sa.BigInteger, nullable=True),  # planning finished
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=True),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("env_id", "campaign_key", "slot_ms", name="ux_broadcast_occurrences_slot"),
    )
    op.create_index("ix_broadcast_occurrences_state", "broadcast_occurrences", ["state", "slot_ms"])
    op.create_table(
        "broadcast_recipients",
        sa.Column("occurrence_id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.String(256), primary_key=True),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "broadcast_dispatches",
        sa.Column("occurrence_id", sa.Integer, primary_key=True),
        sa.Column("dispatch_id", sa.String(36), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
    )
    op.create_index("ix_broadcast_dispatches_dispatch", "broadcast_dispatches", ["dispatch_id"])


def downgrade() -> None:
    op.drop_index("ix_broadcast_dispatches_dispatch", table_name="broadcast_dispatches")
    op.drop_table("broadcast_dispatches")
    op.drop_table("broadcast_recipients")
    op.drop_index("ix_broadcast_occurrences_state", table_name="broadcast_occurrences")
    op.drop_table("broadcast_occurrences")
