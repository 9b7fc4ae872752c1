"""Campaigns and static cohorts."""

from __future__ import annotations

from magpie.store.db import Database


def bootstrap_demo(db: Database, *, env_id: int) -> int | None:
    del db, env_id
    return None
