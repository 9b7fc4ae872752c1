"""Files private by construction: under umask 022, every directory magpie creates is 0700 and every
file 0600 (serve, worker, backup, restore, the CLI); restore refuses links and bad keys; a bad key
ends ``serve`` with one line."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, ServerProcess, magpie_cli

pytestmark = pytest.mark.usefixtures("open_umask")


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of `make run`, a manual start or a container volume: files readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(directory: Path) -> None:
    """``directory`` is 0700 and everything in it (files 0600, directories 0700) is its owner's alone."""
    assert mode(directory) == 0o700, (directory, oct(mode(directory)))
    seen = list(directory.rglob("*"))
    assert seen, f"{directory} is empty"
    for path in seen:
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, (path, oct(mode(path)))


def new_store(data: Path) -> None:
    created = magpie_cli("env", "create", "production", data_dir=data)
    assert created.returncode == 0, created.stderr
    reindexed = magpie_cli("phone", "reindex", data_dir=data)  # a command that needs the secret key
    assert reindexed.returncode == 0, reindexed.stderr


def test_files_serve_creates_a_private_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data_dir=data) as server:
        key, _ = server.credentials()
        answer = httpx.post(
            server.url + "/v1/properties",
            json={"userId": "u", "operations": {"$set": {"a": 1}}},
            headers={"X-HACKLE-API-KEY": key},
        )
        assert answer.status_code == 200, answer.text
        names = {p.name for p in data.iterdir()}
        assert {"magpie.db", "magpie.db-wal", "magpie.db-shm", "secret.key"} <= names, names
        assert_private(data)


def test_files_worker_creates_a_private_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    worker = ServerProcess(data_dir=data, args=["worker"]).start()
    try:
        deadline = time.monotonic() + 30
        while not (data / "magpie.db-wal").exists() and time.monotonic() < deadline:
            assert worker.proc is not None and worker.proc.poll() is None, worker.output()
            time.sleep(0.05)
        assert (data / "secret.key").exists() and (data / "magpie.db-wal").exists(), worker.output()
        assert_private(data)
    finally:
        worker.stop()


def test_files_cli_creates_a_private_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    new_store(data)
    assert (data / "secret.key").exists()
    assert_private(data)


def test_files_an_open_data_directory_and_store_are_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    new_store(data)
    os.chmod(data, 0o755)
    for path in data.iterdir():
        os.chmod(path, 0o644)
    listed = magpie_cli("env", "list", data_dir=data)
    assert listed.returncode == 0, listed.stderr
    assert "tightened to 0700" in listed.stderr
    assert mode(data) == 0o700 and mode(data / "magpie.db") == 0o600


def test_files_backup_and_restore_are_private(tmp_path: Path) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    new_store(data)
    made = magpie_cli("backup", "--to", str(backup), data_dir=data)
    assert made.returncode == 0, made.stderr
    assert {p.name for p in backup.iterdir()} == {"magpie.db", "secret.key", "magpie-backup.json"}
    assert_private(backup)
    os.chmod(backup / "magpie.db", 0o644)  # a backup copied around loosely: the restore is private anyway
    done = magpie_cli("restore", str(backup), data_dir=restored)
    assert done.returncode == 0, done.stderr
    listed = magpie_cli("env", "list", "--json", data_dir=restored)
    assert listed.returncode == 0 and "production" in listed.stdout, listed.stderr
    assert (restored / "secret.key").read_bytes() == (data / "secret.key").read_bytes()
    assert_private(restored)


@pytest.mark.parametrize("member", ["secret.key", "magpie.db", "magpie-backup.json"])
def test_files_restore_refuses_a_linked_member(tmp_path: Path, member: str) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    new_store(data)
    assert magpie_cli("backup", "--to", str(backup), data_dir=data).returncode == 0
    elsewhere = tmp_path / f"elsewhere-{member}"
    shutil.move(backup / member, elsewhere)
    (backup / member).symlink_to(elsewhere)
    refused = magpie_cli("restore", str(backup), data_dir=restored)
    assert refused.returncode == 2, refused.stderr
    assert "symbolic link" in refused.stderr and "Traceback" not in refused.stderr
    assert not restored.exists()


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(b"abc", id="3-bytes"),
        pytest.param(base64.urlsafe_b64encode(bytes(16)), id="16-byte-key"),
        pytest.param(b"\xff" * 44, id="not-base64"),
        pytest.param(b"", id="empty"),
    ],
)
def test_files_restore_refuses_a_bad_key_before_touching_the_store(tmp_path: Path, key: bytes) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    new_store(data)
    assert magpie_cli("backup", "--to", str(backup), data_dir=data).returncode == 0
    (backup / "secret.key").write_bytes(key)
    refused = magpie_cli("restore", str(backup), data_dir=restored)
    assert refused.returncode == 2, refused.stderr
    assert "not a secret key" in refused.stderr and "Traceback" not in refused.stderr
    assert not restored.exists()


def test_files_restore_refuses_a_secret_key_setting_that_is_not_the_backups(tmp_path: Path) -> None:
    data, backup, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    new_store(data)
    assert magpie_cli("backup", "--to", str(backup), data_dir=data).returncode == 0
    other = base64.urlsafe_b64encode(os.urandom(32)).decode()
    refused = subprocess.run(
        [sys.executable, "-m", "magpie.cli", "restore", str(backup)],
        env=dict(os.environ, MAGPIE_DATA_DIR=str(restored), MAGPIE_SECRET_KEY=other),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert refused.returncode == 2 and "not the backup's key" in refused.stderr, refused.stderr
    assert not restored.exists()


@pytest.mark.parametrize(
    ("key_file", "setting"),
    [
        pytest.param(b"abc", None, id="short-secret-key-file"),
        pytest.param(None, "abc", id="short-MAGPIE_SECRET_KEY"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_files_a_bad_key_ends_the_start_with_one_line(
    tmp_path: Path, key_file: bytes | None, setting: str | None, command: str
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    if key_file is not None:
        (data / "secret.key").write_bytes(key_file)
    environ = dict(os.environ, MAGPIE_DATA_DIR=str(data), MAGPIE_PORT="0", MAGPIE_HOST="127.0.0.1")
    if setting is not None:
        environ["MAGPIE_SECRET_KEY"] = setting
    ended = subprocess.run(
        [sys.executable, "-m", "magpie.cli", command],
        env=environ,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert ended.returncode == 2, ended.stderr
    assert "Traceback" not in ended.stderr and len(ended.stderr.strip().splitlines()) == 1, ended.stderr
    assert "not a secret key" in ended.stderr
