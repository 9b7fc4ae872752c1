"""Third-party files under the dashboard's vendor/ folder match the checksums listed beside them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import magpie.dashboard

VENDOR = Path(magpie.dashboard.__file__).parent / "static" / "vendor"


def test_vendor_files_match_their_listed_sha256() -> None:
    listed = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (VENDOR / "README.md").read_text(), re.M)
    assert listed, "vendor/README.md lists no file"
    for name, digest in listed:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    served = {p.name for p in VENDOR.iterdir() if p.suffix == ".js"}
    assert served == {name for name, _ in listed}
