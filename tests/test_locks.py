"""Runtime and development dependencies are locked apart.

requirements.lock holds exactly what magpie needs to run (what `make run`, the operations guide and the
container install); requirements-dev.lock the test and development tools on top of it.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DEV_TOOLS = {"pytest", "playwright", "mypy", "ruff", "import-linter", "hypothesis", "py-spy", "schemathesis"}
# Needed to install magpie itself from the checkout (`pip install --no-build-isolation -e .`); wheel needs packaging.
INSTALL_TOOLS = {"setuptools", "wheel", "packaging"}


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            package, version = line.split("==")
            pins[canonicalize_name(package)] = version
    return pins


def _closure(extras: set[str]) -> set[str]:
    """magpie's requirements (with ``extras``) and theirs, as installed here."""
    wanted, seen = [("magpie", frozenset(extras))], set()
    while wanted:
        name, with_extras = wanted.pop()
        for raw in metadata.requires(name) or []:
            requirement = Requirement(raw)
            environments = [{"extra": e} for e in with_extras] or [{"extra": ""}]
            if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
                continue
            key = canonicalize_name(requirement.name)
            if key not in seen:
                seen.add(key)
                wanted.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_the_runtime_lock_is_exactly_what_magpie_needs_to_run() -> None:
    runtime = _pins("requirements.lock")
    assert set(runtime) == _closure(set()) | INSTALL_TOOLS
    assert not DEV_TOOLS & set(runtime)


def test_the_development_lock_adds_the_tools_and_never_repins_a_runtime_package() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert not set(runtime) & set(dev)
    assert DEV_TOOLS <= set(dev)
    assert set(runtime) | set(dev) == _closure({"dev"}) | INSTALL_TOOLS
    for name, version in {**runtime, **dev}.items():  # the installed versions are the pinned ones
        assert metadata.version(name) == version, name


def test_run_and_the_production_installs_use_the_runtime_lock_only() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^run: \$\(RUNTIME\)$", makefile, re.MULTILINE)
    runtime_recipe = makefile.split("$(RUNTIME): ", 1)[1].split("\n\n", 1)[0]
    assert "requirements.lock" in runtime_recipe and "requirements-dev.lock" not in runtime_recipe
    assert re.search(r"^(test|check): \$\(STAMP\)", makefile, re.MULTILINE)
    for shipped in ("deploy/Containerfile", "docs/operations.md"):
        text = (ROOT / shipped).read_text(encoding="utf-8")
        assert "-r requirements.lock" in text and "-r requirements-dev.lock" not in text, shipped
