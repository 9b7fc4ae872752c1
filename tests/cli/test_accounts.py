"""The magpie command: bootstrap, environments, keys, users, schema; --json everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.support import ServerProcess, magpie_cli


def _json(*args: str, data_dir: Path) -> object:
    result = magpie_cli(*args, "--json", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_env_and_key_lifecycle_round_trips_as_json(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = _json("env", "create", "production", "--timezone", "UTC", data_dir=data)
    assert isinstance(created, dict)
    assert created["environment"]["name"] == "production"
    assert created["apiKey"].startswith("mgp_")
    envs = _json("env", "list", data_dir=data)
    assert [e["name"] for e in envs] == ["production"]  # type: ignore[union-attr]
    extra = _json("key", "create", "--env", "production", "--name", "ci", data_dir=data)
    keys = _json("key", "list", "--env", "production", data_dir=data)
    assert len(keys) == 2  # type: ignore[arg-type]
    assert all(k["revoked_at"] is None for k in keys)  # type: ignore[union-attr]
    revoked = _json("key", "revoke", extra["key"]["prefix"], data_dir=data)  # type: ignore[index]
    assert revoked["revoked_at"] is not None  # type: ignore[index]
    # Only hashes are stored: the plain key appears nowhere in the database file.
    assert created["apiKey"].encode() not in (data / "magpie.db").read_bytes()


def test_cli_errors_are_reported_with_codes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = magpie_cli("key", "create", "--env", "missing", "--json", data_dir=data)
    assert result.returncode == 1
    assert json.loads(result.stderr)["code"] == "NOT_FOUND"
    magpie_cli("env", "create", "dup", data_dir=data)
    result = magpie_cli("env", "create", "dup", data_dir=data)
    assert result.returncode == 1 and "CONFLICT" in result.stderr


def test_cli_db_upgrade_reports_revision(tmp_path: Path) -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import magpie.store.db as store_db

    config = Config()
    config.set_main_option("script_location", str(Path(store_db.__file__).parent / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    assert _json("db", "upgrade", data_dir=tmp_path / "data") == {"revision": head}


def test_serve_bootstraps_empty_store_once_and_revoke_bites_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data_dir=data) as server:
        out = server.output()
        key = next(line.split()[-1] for line in out.splitlines() if "API key:" in line)
        token = next(line.split()[-1] for line in out.splitlines() if "admin token:" in line)
        body = {"userId": "19285035", "operations": {"$set": {"grade": "GOLD"}}}
        response = httpx.post(server.url + "/v1/properties", json=body, headers={"X-HACKLE-API-KEY": key})
        assert response.status_code == 200
        shown = _json("user", "show", "19285035", "--env", "development", data_dir=data)
        assert shown["properties"] == {"grade": "GOLD"}  # type: ignore[index]
        admin = httpx.get(
            server.url + "/admin/v1/environments/development/users/19285035",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert admin.json()["properties"] == {"grade": "GOLD"}
        # Revoked from another process while the server has the key cached.
        assert magpie_cli("key", "revoke", key, data_dir=data).returncode == 0
        response = httpx.post(server.url + "/v1/properties", json=body, headers={"X-HACKLE-API-KEY": key})
        assert response.status_code == 401
        assert response.json()["code"] == "INVALID_API_KEY"
    with ServerProcess(data_dir=data) as again:
        assert "API key:" not in again.output()
        assert "created a new store" not in again.output()
