"""Campaign statistics kept as hourly counts, attributed clicks, and the audit log.

``campaign_counts`` holds one row per environment, campaign (``0``: all of them), hour (epoch ms of the UTC hour)
and metric: ``REQUESTED`` (by acceptance time), ``SENT``, ``FAILED:<reason>``,
``EXCLUDED:<reason>`` (by the time the outcome was recorded), ``CLICK`` and ``UNIQUE_CLICK``
(by click time). The writer keeps it up to date in the transaction that records each fact, so
statistics pages read a few hundred rows instead of counting recipients.

``push_clicks.attributed`` marks the clicks that name a delivery of their campaign sent to the
clicking profile; the others stay stored, unattributed. Existing rows are backfilled here.

Revision ID: 0003_campaign_counts
Revises: 0002_sdk_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_campaign_counts"
down_revision = "0002_sdk_events"
branch_labels = None
depends_on = None

_HOUR = 3_600_000


def upgrade() -> None:
    op.create_table(
        "campaign_counts",
        sa.Column("env_id", sa.Integer, primary_key=True),
        sa.Column("campaign_key", sa.Integer, primary_key=True),
        sa.Column("hour", sa.BigInteger, primary_key=True),
        sa.Column("metric", sa.String(48), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    # Covers the environment-wide reads (overview, campaign list) without touching the table.
    op.create_index("ix_campaign_counts_hour", "campaign_counts", ["env_id", "hour", "campaign_key", "metric", "n"])
    op.add_column("push_clicks", sa.Column("attributed", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_push_clicks_delivery", "push_clicks", ["env_id", "delivery_id"])
    op.create_index("ix_dispatches_env_time", "dispatches", ["env_id", "created_at"])
    op.create_index("ix_inbox_delivery", "inbox", ["env_id", "delivery_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("env_id", sa.Integer, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(160), nullable=False),
    )
    op.create_index("ix_audit_log_target", "audit_log", ["env_id", "target", "at"])
    _backfill()


def _backfill() -> None:
    # A click is attributed when its delivery exists in the environment, belongs to the campaign
    # the click names (when it names one), was sent, and went to the profile the click came from.
    op.execute(
        "UPDATE push_clicks SET attributed = 1 WHERE delivery_id IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM deliveries d JOIN events e ON e.env_id = push_clicks.env_id "
        "AND e.insert_id = push_clicks.insert_id "
        "WHERE d.id = push_clicks.delivery_id AND d.env_id = push_clicks.env_id AND d.status = 'SENT' "
        "AND (push_clicks.campaign_key IS NULL OR push_clicks.campaign_key = d.campaign_key) "
        "AND (d.user_key = e.kind || ':' || e.ident))"
    )
    op.execute(
        "UPDATE push_clicks SET campaign_key = (SELECT d.campaign_key FROM deliveries d "
        "WHERE d.id = push_clicks.delivery_id) WHERE attributed = 1"
    )
    op.execute(
        "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) "
        f"SELECT env_id, campaign_key, (created_at / {_HOUR}) * {_HOUR}, 'REQUESTED', SUM(requested) "
        f"FROM dispatches GROUP BY env_id, campaign_key, (created_at / {_HOUR}) * {_HOUR}"
    )
    op.execute(
        "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) "
        f"SELECT d.env_id, d.campaign_key, (r.updated_at / {_HOUR}) * {_HOUR}, "
        "CASE WHEN r.outcome = 'SENT' THEN 'SENT' ELSE r.outcome || ':' || COALESCE(r.reason, '') END, COUNT(*) "
        "FROM recipients r JOIN dispatches d ON d.id = r.dispatch_id WHERE r.outcome IS NOT NULL "
        f"GROUP BY d.env_id, d.campaign_key, (r.updated_at / {_HOUR}) * {_HOUR}, "
        "CASE WHEN r.outcome = 'SENT' THEN 'SENT' ELSE r.outcome || ':' || COALESCE(r.reason, '') END"
    )
    op.execute(
        "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) "
        f"SELECT env_id, campaign_key, (clicked_at / {_HOUR}) * {_HOUR}, 'CLICK', COUNT(*) "
        f"FROM push_clicks WHERE attributed = 1 GROUP BY env_id, campaign_key, (clicked_at / {_HOUR}) * {_HOUR}"
    )
    op.execute(
        "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) "
        f"SELECT env_id, campaign_key, (first_click / {_HOUR}) * {_HOUR}, 'UNIQUE_CLICK', COUNT(*) FROM ("
        "SELECT env_id, campaign_key, delivery_id, MIN(clicked_at) AS first_click FROM push_clicks "
        "WHERE attributed = 1 GROUP BY env_id, campaign_key, delivery_id) firsts "
        f"GROUP BY env_id, campaign_key, (first_click / {_HOUR}) * {_HOUR}"
    )
    # Campaign key 0: the environment's totals (campaign keys are positive).
    op.execute(
        "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n) "
        "SELECT env_id, 0, hour, metric, SUM(n) FROM campaign_counts GROUP BY env_id, hour, metric"
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_index("ix_inbox_delivery", table_name="inbox")
    op.drop_index("ix_dispatches_env_time", table_name="dispatches")
    op.drop_index("ix_push_clicks_delivery", table_name="push_clicks")
    with op.batch_alter_table("push_clicks") as batch:
        batch.drop_column("attributed")
    op.drop_index("ix_campaign_counts_hour", table_name="campaign_counts")
    op.drop_table("campaign_counts")
