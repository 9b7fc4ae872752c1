"""Hackle SDK ingestion: the event types an environment has seen, and what the SDK sent with an event.

``event_types`` backs the ``events`` list of the workspace document the SDKs download, so
``track()`` of a known key carries its id. ``events.context`` keeps the SDK's own
``userProperties`` / ``hackleProperties`` as sent, beside magpie's stored-profile snapshot.

Revision ID: 0002_sdk_events
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_sdk_events"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_types",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("id", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.add_column("events", sa.Column("context", sa.Text, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("context")
    op.drop_table("event_types")
