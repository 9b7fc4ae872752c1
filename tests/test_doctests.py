"""The examples in magpie's docstrings run and hold."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import magpie

SOURCE = Path(magpie.__file__).parent


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(SOURCE.rglob("*.py")):
        if "migrations" in path.parts or ">>>" not in path.read_text(encoding="utf-8"):
            continue
        relative = path.relative_to(SOURCE.parent).with_suffix("")
        names.append(".".join(relative.parts).removesuffix(".__init__"))
    return names


MODULES = _modules_with_examples()


def test_doctests_found_in_retry_policy() -> None:
    assert "magpie.dispatch.retry" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
