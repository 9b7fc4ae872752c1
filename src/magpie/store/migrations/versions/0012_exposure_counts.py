"""Exposures in the hourly campaign counts: metric ``EXPOSED:<version>:<arm>`` of the campaign (not of
campaign ``0``), in the hour each recipient was recorded in its arm, for the exposures already stored.

The experiment report then reads its exposed counts from a few rows per hour and arm instead of
counting every exposure.

``ix_exposures_user`` gains the columns attribution reads (campaign, arm, version, and the recipient's
dispatch and index), so attributing a goal event reads the index alone, not the table.

Revision ID: 0012_exposure_counts
Revises: 0011_conversion_counts
"""

from __future__ import annotations

from alembic import op

revision = "0012_exposure_counts"
down_revision = "0011_conversion_counts"
branch_labels = None
depends_on = None

_HOUR = 3_600_000
_METRIC = "'EXPOSED:' || version || ':' || CAST(arm AS VARCHAR(8))"


_USER = ["env_id", "user_key", "exposed_at"]
_COVERING = [*_USER, "campaign_key", "arm", "version", "dispatch_id", "idx"]


def upgrade() -> None:
    op.drop_index("ix_exposures_user", table_name="exposures")
    op.create_index("ix_exposures_user", "exposures", _COVERING)
    op.execute(
        "INSERT INTO campaign_counts (env_id, campaign_key, hour, metric, n, revenue) "
        f"SELECT env_id, campaign_key, (exposed_at / {_HOUR}) * {_HOUR}, {_METRIC}, COUNT(*), 0 FROM exposures "
        f"GROUP BY env_id, campaign_key, (exposed_at / {_HOUR}) * {_HOUR}, {_METRIC}"
    )


def downgrade() -> None:
    op.execute("DELETE FROM campaign_counts WHERE metric LIKE 'EXPOSED:%'")
    op.drop_index("ix_exposures_user", table_name="exposures")
    op.create_index("ix_exposures_user", "exposures", _USER)
