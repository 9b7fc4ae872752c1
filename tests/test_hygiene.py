"""Code hygiene the project keeps: docstrings cite documents in the repository, and removed dead code stays gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))


def test_no_citation_of_a_specification_outside_the_repository() -> None:
    cited = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in SOURCES
        if path.name != "test_hygiene.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bSPEC\b", line)
    ]
    assert cited == [], "cite a document in the repository (README.md, docs/*.md) instead"


def test_removed_dead_code_is_not_back() -> None:
    import magpie.app
    import magpie.domain.campaigns
    import magpie.store.accounts
    import magpie.store.transaction

    assert not hasattr(magpie.app.MagpieApp, "add_param_route")
    assert not hasattr(magpie.domain.campaigns.Campaign, "has_part")
    assert not hasattr(magpie.store.accounts, "get_environment_by_id")
    assert not hasattr(magpie.store.transaction.Tx, "peek_profile")
