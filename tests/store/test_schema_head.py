"""The newest migration is known without Alembic, and a store already at it is opened without loading Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from magpie.config import Settings
from magpie.store import db as store_db
from magpie.store.db import Database, head_revision


def test_each_migration_is_named_by_its_revision_and_the_newest_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store_db.__file__).parent / "migrations"))
    script = ScriptDirectory.from_config(cfg)
    named = [r for r in script.walk_revisions() if r.down_revision is not None]  # the first is "0001"
    assert len(named) >= 13
    for revision in named:
        assert Path(revision.path).stem == revision.revision
    assert head_revision() == script.get_current_head()


def test_a_store_at_the_newest_migration_opens_without_alembic(settings: Settings) -> None:
    Database(settings.database_url).upgrade()
    probe = (
        "import sys; from magpie.store.db import Database; "
        f"db = Database({settings.database_url!r}); db.upgrade(); "
        "print('alembic' in sys.modules, db.current_revision())"
    )
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert shown.stdout.split() == ["False", head_revision()]


def test_a_store_behind_is_still_upgraded(settings: Settings) -> None:
    db = Database(settings.database_url)
    db.upgrade("0012_exposure_counts")
    db.upgrade()
    assert db.current_revision() == head_revision()
