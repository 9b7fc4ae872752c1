"""The README's first examples, run as written against a real `magpie serve` on a fresh store.

The Hackle requests (with `KEY` and `ADMIN` set as the README says), the outcome it promises for the
first trigger, then the sandbox push flow (`magpie token add`, the trigger again, `stats dispatch`).
Only the port changes, as the README says it may.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, ServerProcess

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block(after: str) -> str:
    found = re.search(r"```sh\n(.*?)```", README.split(after, 1)[1], re.DOTALL)
    assert found is not None, after
    return found.group(1)


def _bash(script: str, *, data: Path, port: int) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MAGPIE_")}
    environ["MAGPIE_DATA_DIR"] = str(data)
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's examples use curl")
def test_the_readme_examples_work_as_written_on_a_fresh_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data_dir=data, env={"MAGPIE_BOOTSTRAP": "1"}) as server:
        key, admin = server.credentials()
        hackle = _block("## The Hackle API, verbatim")
        assert "KEY=mgp_..." in hackle and "ADMIN=mga_..." in hackle  # both set before any use
        hackle = hackle.replace("KEY=mgp_...", f"KEY={key}").replace("ADMIN=mga_...", f"ADMIN={admin}")
        result = _bash(hackle, data=data, port=server.port)
        assert result.returncode == 0, result.stderr
        statuses = re.findall(r"HTTP/1\.1 (\d+)", result.stdout)
        assert statuses == ["200"] * len(statuses) and len(statuses) == hackle.count("curl "), result.stdout
        dispatch = re.findall(r'"dispatchId":"([0-9a-f-]+)"', result.stdout)[-1]
        headers = {"X-HACKLE-API-KEY": key}
        deadline = time.monotonic() + 30
        while True:  # the worker decides asynchronously: wait for the outcome
            view = httpx.get(f"{server.url}/v1/push-message/dispatches/{dispatch}", headers=headers).json()
            if view["recipients"][0]["outcome"] != "PENDING" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # As the README says: the user exists, and has no push token yet.
        assert [(r["userId"], r["outcome"], r["reason"]) for r in view["recipients"]] == [
            ("19285035", "EXCLUDED", "NO_PUSH_TOKEN")
        ], view

        flow = _block("## Push: the whole flow in the sandbox").splitlines()
        token_add = next(line for line in flow if "magpie token add" in line)
        assert _bash(token_add, data=data, port=server.port).returncode == 0
        trigger = hackle.split("curl -i -X POST 'http://127.0.0.1:8080/v1/push-message/trigger/send'", 1)[1]
        again = _bash(
            f"KEY={key}\ncurl -s -X POST 'http://127.0.0.1:8080/v1/push-message/trigger/send'" + trigger,
            data=data,
            port=server.port,
        )
        second = json.loads(again.stdout)["dispatchId"]
        stats = next(line for line in flow if "magpie stats dispatch" in line).replace("<dispatchId>", second)
        for _ in range(300):
            shown = _bash(stats, data=data, port=server.port)
            if "sent 1" in shown.stdout:
                break
            time.sleep(0.1)
        assert "sent 1" in shown.stdout, shown.stdout + shown.stderr
        inbox = next(line for line in flow if "/inbox" in line).replace("$ADMIN", admin)
        assert '"token":"demo-token"' in _bash(inbox, data=data, port=server.port).stdout
