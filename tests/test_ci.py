"""CI (`.ci/run`) runs the project's checks and the whole suite, and refuses a suite that dirties the tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / ".ci" / "run"


def _commands() -> list[str]:
    lines = [line.strip() for line in RUN.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_runs_make_check_then_make_test_with_postgres_and_browser_required() -> None:
    commands = _commands()
    assert "make check" in commands and "make test" in commands
    assert commands.index("make check") < commands.index("make test")
    assert "set -euo pipefail" in commands  # a failing check stops the run
    assert "export MAGPIE_REQUIRE_POSTGRES=1 MAGPIE_REQUIRE_BROWSER=1" in commands
    assert subprocess.run(["bash", "-n", str(RUN)], check=False).returncode == 0


def test_ci_fails_when_the_suite_changes_the_working_tree() -> None:
    text = RUN.read_text(encoding="utf-8")
    before, after = text.index('before="$(git status --porcelain'), text.index('after="$(git status --porcelain')
    assert before < text.index("make test") < after and 'if [ "$before" != "$after" ]' in text
