"""Copy the screenshots docs/dashboard.md shows from build/screenshots/ into docs/img/.

The browser tests only write to build/screenshots/ (not in the repository); run this after them,
on purpose, when the pictures in the documentation should change::

    .venv/bin/python -m pytest -q tests/dashboard/test_browser_reports.py
    .venv/bin/python -m tests.dashboard.copy_screenshots
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "build" / "screenshots"
TARGET = ROOT / "docs" / "img"
# The pages docs/dashboard.md shows, at desktop and phone width.
NAMES = ("dashboard-gateways", "dashboard-compare", "dashboard-overview-against", "dashboard-campaign-against")


def main() -> int:
    missing = [f"{n}{s}.png" for n in NAMES for s in ("", "-phone") if not (SOURCE / f"{n}{s}.png").exists()]
    if missing:
        sys.stderr.write(f"not in {SOURCE}: {', '.join(missing)} (run tests/dashboard/test_browser_reports.py)\n")
        return 1
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        for suffix in ("", "-phone"):
            shutil.copyfile(SOURCE / f"{name}{suffix}.png", TARGET / f"{name}{suffix}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
