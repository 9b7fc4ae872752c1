"""A user's outcomes, newest first: the dashboard's user page lists every outcome (excluded ones too,
which have no delivery), so recipients get an index by environment, user and time.

Revision ID: 0008_recipients_by_user
Revises: 0007_dashboard_sessions
"""

from __future__ import annotations

from alembic import op

revision = "0008_recipients_by_user"
down_revision = "0007_dashboard_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_recipients_user", "recipients", ["env_id", "user_id", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_recipients_user", "recipients")
