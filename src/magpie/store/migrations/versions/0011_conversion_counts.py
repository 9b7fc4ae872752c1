"""Conversions in the hourly campaign counts: ``campaign_counts.revenue``, and the counts of the
conversions already stored; indexes that let the experiment report count exposures without reading
every recipient.

A conversion adds 1 to metric ``CONVERSION:<version>:<arm>`` of its campaign (and of campaign ``0``)
in the hour of its goal event, and its value to that row's ``revenue`` (0 on every other row), so the
experiment report reads a few rows per hour instead of counting conversions.

``ix_exposures_campaign`` gains ``exposed_at`` (counts and first/last times from the index alone), and
``ix_recipients_unsent_variant`` holds only the variant recipients not (yet) ``SENT``: a variant's
exposed count is its exposures less those.

Revision ID: 0011_conversion_counts
Revises: 0010_experiments
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_conversion_counts"
down_revision = "0010_experiments"
branch_labels = None
depends_on = None

_HOUR = 3_600_000
_UNSENT = "variant > 0 AND (outcome IS NULL OR outcome <> 'SENT')"
_METRIC = "'CONVERSION:' || version || ':' || CAST(arm AS VARCHAR(8))"


def upgrade() -> None:
    with op.batch_alter_table("campaign_counts") as batch:
        batch.add_column(sa.Column("revenue", sa.Float, nullable=False, server_default="0"))
    # Each campaign's rows, then campaign 0's (the environment's totals; campaign keys are positive).
    for campaign_key, grouped in (("campaign_key", "campaign_key, "), ("0", "")):
        op.execute(
            "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n, revenue) "
            f"SELECT env_id, {campaign_key}, (converted_at / {_HOUR}) * {_HOUR}, {_METRIC}, COUNT(*), "
            "SUM(COALESCE(value, 0)) FROM conversions "
            f"GROUP BY env_id, {grouped}(converted_at / {_HOUR}) * {_HOUR}, {_METRIC}"
        )

    op.drop_index("ix_exposures_campaign", table_name="exposures")
    op.create_index("ix_exposures_campaign", "exposures", ["env_id", "campaign_key", "version", "arm", "exposed_at"])
    op.create_index(
        "ix_recipients_unsent_variant",
        "recipients",
        ["dispatch_id", "idx"],
        sqlite_where=sa.text(_UNSENT),
        postgresql_where=sa.text(_UNSENT),
    )


def downgrade() -> None:
    op.drop_index("ix_recipients_unsent_variant", table_name="recipients")
    op.drop_index("ix_exposures_campaign", table_name="exposures")
    op.create_index("ix_exposures_campaign", "exposures", ["env_id", "campaign_key", "version", "arm"])
    op.execute("DELETE FROM campaign_counts WHERE metric LIKE 'CONVERSION:%'")
    with op.batch_alter_table("campaign_counts") as batch:
        batch.drop_column("revenue")
