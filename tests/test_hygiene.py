"""Code hygiene the project keeps: docstrings cite documents in the repository, removed dead code stays gone,
and rows are read by name."""

from __future__ import annotations

import ast
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


# Rows are read by name (NamedTuples beside their queries, or unpacked), never by position: a column
# added to a SELECT must not shift what every ``row[3]`` means. Checked in the store and in the
# dashboard and API modules that read rows.
NAMED_ROWS = [
    *sorted((ROOT / "src" / "magpie" / "store").rglob("*.py")),
    ROOT / "src" / "magpie" / "api" / "http" / "auth.py",
    ROOT / "src" / "magpie" / "dashboard" / "pages.py",
]


def _integer_subscripts(source: str) -> list[int]:
    """Lines where ``source`` subscripts with an integer constant (``row[0]``, ``rows[-1]``); slices pass."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Subscript):
            continue
        index = node.slice
        if isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub | ast.UAdd):
            index = index.operand
        if isinstance(index, ast.Constant) and type(index.value) is int:
            lines.append(node.lineno)
    return lines


def test_integer_subscripts_are_found_and_slices_are_not() -> None:
    source = "a = row[0]\nb = rows[-1]\nc = key[:12]\nd = m['x']\ne = m[i]\nf = rows[1][2]\n"
    assert _integer_subscripts(source) == [1, 2, 6, 6]


def test_store_rows_are_read_by_name_not_by_position() -> None:
    positional = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in NAMED_ROWS
        for line in _integer_subscripts(path.read_text(encoding="utf-8"))
    ]
    assert positional == [], "name the row's fields (a NamedTuple beside the query) or unpack it"
