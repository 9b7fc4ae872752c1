"""The initial schema: environments, keys, profiles, push, campaigns, dispatch, events.

Every data table is keyed by environment first and profile second, so the schema can be
distributed by ``env_id`` without redesign. Times are epoch milliseconds; JSON is text.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ms = sa.BigInteger


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="Asia/Seoul"),
        sa.Column("settings", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("updated_at", _ms, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_hash", sa.String(64), primary_key=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("revoked_at", _ms, nullable=True),
    )
    op.create_index("ix_api_keys_env", "api_keys", ["env_id"])
    op.create_table(
        "admin_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("revoked_at", _ms, nullable=True),
    )
    # One row per user (kind 'u') or device (kind 'd'). A device row carries the user it is
    # linked to and the properties it had while anonymous.
    op.create_table(
        "profiles",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(1), primary_key=True),
        sa.Column("ident", sa.String(256), primary_key=True),
        sa.Column("properties", sa.Text, nullable=False, server_default="{}"),
        sa.Column("crm", sa.Text, nullable=False, server_default="{}"),
        sa.Column("phone_enc", sa.LargeBinary, nullable=True),
        sa.Column("linked_user", sa.String(256), nullable=True),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("updated_at", _ms, nullable=False),
        # On SQLite the primary key is the table: one B-tree to search and write instead of two.
        sqlite_with_rowid=False,
    )
    # Only device rows carry a link; user rows stay out of this index.
    op.create_index(
        "ix_profiles_linked_user",
        "profiles",
        ["env_id", "linked_user"],
        sqlite_where=sa.text("linked_user IS NOT NULL"),
        postgresql_where=sa.text("linked_user IS NOT NULL"),
    )
    op.create_table(
        "push_tokens",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(512), primary_key=True),
        sa.Column("device_id", sa.String(256), nullable=False),
        sa.Column("provider_type", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="ACTIVE"),
        sa.Column("retired_reason", sa.String(64), nullable=True),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("updated_at", _ms, nullable=False),
    )
    op.create_index("ix_push_tokens_device", "push_tokens", ["env_id", "device_id"])
    op.create_table(
        "campaigns",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("key", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("updated_at", _ms, nullable=False),
    )
    op.create_table(
        "cohort_members",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("cohort", sa.String(128), primary_key=True),
        sa.Column("member", sa.String(256), primary_key=True),
    )
    op.create_table(
        "dispatches",
        sa.Column("id", sa.String(36), primary_key=True),
        # A 52-bit number for the same dispatch: Hackle's SDKs carry execution ids as numbers.
        sa.Column("exec_id", sa.BigInteger, nullable=False, unique=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("campaign_key", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("users", sa.Text, nullable=False),
        sa.Column("requested", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("completed_at", _ms, nullable=True),
    )
    op.create_index("ix_dispatches_campaign", "dispatches", ["env_id", "campaign_key", "created_at"])
    op.create_index("ux_dispatches_idem", "dispatches", ["env_id", "idempotency_key"], unique=True)
    # The transactional outbox: written in the same transaction as the dispatch it drives.
    op.create_table(
        "work_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("dispatch_id", sa.String(36), nullable=False),
        sa.Column("payload", sa.Text, nullable=False, server_default="{}"),
        sa.Column("available_at", _ms, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", _ms, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_work_items_ready", "work_items", ["done", "available_at"])
    op.create_table(
        "recipients",
        sa.Column("dispatch_id", sa.String(36), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("device_id", sa.String(256), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("updated_at", _ms, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("dispatch_id", sa.String(36), nullable=False),
        sa.Column("recipient_idx", sa.Integer, nullable=False),
        sa.Column("campaign_key", sa.Integer, nullable=False),
        sa.Column("user_key", sa.String(260), nullable=False),
        sa.Column("device_id", sa.String(256), nullable=True),
        sa.Column("token", sa.String(512), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider_message_id", sa.String(256), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", _ms, nullable=False),
        sa.Column("updated_at", _ms, nullable=False),
    )
    op.create_index("ux_deliveries_target", "deliveries", ["dispatch_id", "recipient_idx", "token"], unique=True)
    op.create_index("ix_deliveries_user", "deliveries", ["env_id", "user_key", "created_at"])
    # Marketing sends counted by the frequency caps.
    op.create_table(
        "marketing_sends",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("user_key", sa.String(260), primary_key=True),
        sa.Column("dispatch_id", sa.String(36), primary_key=True),
        sa.Column("campaign_key", sa.Integer, nullable=False),
        sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
        sa.Column("sent_at", _ms, nullable=False),
    )
    op.create_index("ix_marketing_sends_time", "marketing_sends", ["env_id", "user_key", "sent_at"])
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("delivery_id", sa.BigInteger, nullable=False),
        sa.Column("token", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", _ms, nullable=False),
    )
    op.create_index("ix_inbox_env", "inbox", ["env_id", "id"])
    op.create_table(
        "push_clicks",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("insert_id", sa.String(128), primary_key=True),
        sa.Column("campaign_key", sa.Integer, nullable=True),
        sa.Column("dispatch_id", sa.String(36), nullable=True),
        sa.Column("delivery_id", sa.BigInteger, nullable=True),
        sa.Column("clicked_at", _ms, nullable=False),
    )
    op.create_index("ix_push_clicks_campaign", "push_clicks", ["env_id", "campaign_key", "clicked_at"])
    op.create_table(
        "events",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("insert_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(1), nullable=False),
        sa.Column("ident", sa.String(256), nullable=False),
        sa.Column("event_key", sa.String(256), nullable=False),
        sa.Column("ts", _ms, nullable=False),
        sa.Column("received_at", _ms, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("properties", sa.Text, nullable=False, server_default="{}"),
        sa.Column("user_properties", sa.Text, nullable=False, server_default="{}"),
        sa.Column("identifiers", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_events_profile", "events", ["env_id", "kind", "ident", "ts"])
    op.create_index("ix_events_received", "events", ["env_id", "received_at"])


def downgrade() -> None:
    for table in (
        "events",
        "push_clicks",
        "inbox",
        "marketing_sends",
        "deliveries",
        "recipients",
        "work_items",
        "dispatches",
        "cohort_members",
        "campaigns",
        "push_tokens",
        "profiles",
        "admin_tokens",
        "api_keys",
        "environments",
    ):
        op.drop_table(table)
