"""Room on every profiles page for the next version of its rows (PostgreSQL).

A property update rewrites its profile row. With pages filled to the brim the new version
lands on another page and every index gets a new entry; with free room on the page it stays
a heap-only tuple (HOT): no index entry, and the old version is pruned in place. No index
covers a column that updates change, so only the free room was missing. New pages follow the
setting at once; pages already full follow it as they are rewritten (``VACUUM FULL`` or
``pg_repack`` apply it to a large existing table in one go). SQLite: nothing to do.

Revision ID: 0004_profiles_fillfactor
Revises: 0003_campaign_counts
"""

from __future__ import annotations

from alembic import op

revision = "0004_profiles_fillfactor"
down_revision = "0003_campaign_counts"
branch_labels = None
depends_on = None

FILLFACTOR = 80


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE profiles SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE profiles RESET (fillfactor)")
