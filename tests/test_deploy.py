"""The deployment files shipped in deploy/ are valid: systemd units pass `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "deploy").glob("*.service"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("unit", [pytest.param(u, id=u.name) for u in UNITS])
def test_systemd_unit_verifies_cleanly(unit: Path, tmp_path: Path) -> None:
    # The unit names /opt/magpie; verify it with this checkout's magpie, which must exist and run.
    magpie = Path(sys.executable).parent / "magpie"
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/magpie/.venv/bin/magpie", str(magpie)))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Unknown keys and unparsable values are only warnings: none is allowed.
    assert [line for line in result.stderr.splitlines() if unit.name in line] == [], result.stderr


def test_units_and_container_run_the_shipped_commands() -> None:
    assert [u.name for u in UNITS] == ["magpie-worker.service", "magpie.service"]
    assert "ExecStart=/opt/magpie/.venv/bin/magpie serve" in (ROOT / "deploy" / "magpie.service").read_text()
    container = (ROOT / "deploy" / "Containerfile").read_text()
    assert 'CMD ["magpie", "serve"]' in container and "requirements.lock" in container
