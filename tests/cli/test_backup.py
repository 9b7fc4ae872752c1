"""``magpie backup`` copies a live SQLite store under write load; ``magpie restore`` brings it back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from magpie.domain.identity import USER
from magpie.store.db import Database
from tests.support import ServerProcess, magpie_cli


@pytest.mark.alone  # counts the writes a load makes in 1.5 s
def test_backup_under_write_load_holds_every_write_acknowledged_before_it_began(tmp_path: Path) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    with ServerProcess(data_dir=data, env={"MAGPIE_WORKERS": "0"}) as server:
        key, _ = server.credentials()
        headers = {"X-HACKLE-API-KEY": key}
        phone = httpx.post(
            server.url + "/v1/properties/phone-numbers",
            json={"userId": "phone-user", "phoneNumber": "+821012345678"},
            headers=headers,
        )
        assert phone.status_code == 200
        acknowledged: list[int] = []
        stop = threading.Event()

        def write(offset: int) -> None:
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                i = offset
                while not stop.is_set():
                    body = {"userId": f"w{i}", "operations": {"$set": {"n": i}}}
                    if client.post("/v1/properties", json=body).status_code == 200:
                        acknowledged.append(i)  # list.append is atomic: the ack is recorded once answered
                    i += 4

        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in writers:
            thread.start()
        try:
            time.sleep(1.5)
            before = set(acknowledged)  # every write acknowledged before the backup begins
            result = magpie_cli("backup", "--to", str(backup), "--json", data_dir=data)
            during = len(acknowledged) - len(before)
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in writers:
                thread.join(timeout=30)
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["bytes"] > 0 and manifest["revision"]
    assert len(before) > 50 and during > 0, (len(before), during)  # the store was written to meanwhile
    assert (backup / "secret.key").stat().st_mode & 0o077 == 0 and (backup / "magpie.db").stat().st_mode & 0o077 == 0

    refused = magpie_cli("restore", str(backup), data_dir=data)  # never over a store in use
    assert refused.returncode == 2 and "not empty" in refused.stderr

    restore = magpie_cli("restore", str(backup), data_dir=restored)
    assert restore.returncode == 0, restore.stderr
    db = Database(f"sqlite:///{restored / 'magpie.db'}")
    with db.transaction(write=False) as conn:
        rows = db.fetchall(conn, "SELECT ident FROM profiles WHERE kind = ? AND ident LIKE 'w%'", (USER,))
    stored = {int(r[0][1:]) for r in rows}
    assert before <= stored, sorted(before - stored)[:10]
    # The secret key came along: the encrypted phone number reads back (masked) from the restored copy.
    shown = magpie_cli("user", "show", "phone-user", "--json", data_dir=restored)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["phoneNumber"].startswith("+82")
    # And the restored store serves.
    with ServerProcess(data_dir=restored, env={"MAGPIE_WORKERS": "0"}) as again:
        answer = httpx.post(again.url + "/v1/properties", json={"userId": "after", "operations": {}}, headers=headers)
        assert answer.status_code == 200
