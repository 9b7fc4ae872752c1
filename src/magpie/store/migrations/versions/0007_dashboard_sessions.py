"""Dashboard sessions kept server-side, so that signing out ends a session wherever its cookie was
copied; and the one-time form ids a session's POSTs consumed, so that a form sent twice acts once.

Revision ID: 0007_dashboard_sessions
Revises: 0006_paid_deliveries
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_dashboard_sessions"
down_revision = "0006_paid_deliveries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        # The admin token that signed in: revoking it ends its sessions too.
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("ended_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_dashboard_sessions_expires", "dashboard_sessions", ["expires_at"])
    op.create_table(
        "dashboard_forms",
        # A hash of (session, form id, method and path): one row per form sent.
        sa.Column("form_key", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("used_at", sa.BigInteger, nullable=False),
        # Where the first POST of the form redirected to, and what that page shows once (encrypted).
        sa.Column("location", sa.Text, nullable=True),
        sa.Column("payload", sa.Text, nullable=True),
    )
    op.create_index("ix_dashboard_forms_used", "dashboard_forms", ["used_at"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_forms_used", table_name="dashboard_forms")
    op.drop_table("dashboard_forms")
    op.drop_index("ix_dashboard_sessions_expires", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
