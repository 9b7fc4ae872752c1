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
        key, token = server.credentials()
        # How to recover lost credentials, said when they are shown.
        assert "magpie key create" in out and "magpie admin-token" in out
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


def test_cli_options_before_the_subcommand_are_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    other = tmp_path / "other"
    # --data-dir before the subcommand names the store, whatever MAGPIE_DATA_DIR says.
    created = magpie_cli("--data-dir", str(data), "--json", "env", "create", "production", data_dir=other)
    assert created.returncode == 0, created.stderr
    assert (data / "magpie.db").exists() and not other.exists()
    listed = magpie_cli("--data-dir", str(data), "env", "list", "--json", data_dir=other)
    assert [e["name"] for e in json.loads(listed.stdout)] == ["production"]
    key = json.loads(created.stdout)["apiKey"]
    url = f"sqlite:///{data / 'magpie.db'}"
    revoked = magpie_cli("--database-url", url, "key", "revoke", key, data_dir=other)
    assert revoked.returncode == 0, revoked.stderr
    keys = _json("key", "list", data_dir=data)
    assert [k["revoked_at"] is not None for k in keys] == [True]  # type: ignore[union-attr]


def test_cli_version_and_key_create_defaults_to_development(tmp_path: Path) -> None:
    import magpie

    version = magpie_cli("--version", data_dir=tmp_path / "data")
    assert version.returncode == 0 and version.stdout.strip() == f"magpie {magpie.__version__}"
    data = tmp_path / "data"
    _json("env", "create", "development", data_dir=data)
    made = _json("key", "create", data_dir=data)
    assert made["key"]["environment"] == "development"  # type: ignore[index]


def test_every_option_has_help_text() -> None:
    import argparse

    from magpie.cli import build_parser

    def walk(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found += [(f"{name} {where}", dest) for where, dest in walk(child)]
            elif not action.help:
                found.append(("", action.dest))
        return found

    assert walk(build_parser()) == []


def test_admin_tokens_are_listed_and_revoked(tmp_path: Path) -> None:
    from magpie.store.accounts import check_admin_token
    from magpie.store.db import Database

    data = tmp_path / "data"
    token = _json("admin-token", "--name", "ops", data_dir=data)["adminToken"]  # type: ignore[index]
    listed = _json("admin-token", "list", data_dir=data)
    assert [(t["name"], t["revoked_at"]) for t in listed] == [("ops", None)]  # type: ignore[index]
    assert token not in json.dumps(listed)
    db = Database(f"sqlite:///{data / 'magpie.db'}")
    with db.transaction(write=False) as conn:
        assert check_admin_token(conn, db, token)
    revoked = _json("admin-token", "revoke", listed[0]["prefix"], data_dir=data)  # type: ignore[index]
    assert revoked["revoked_at"] is not None  # type: ignore[index]
    with db.transaction(write=False) as conn:
        assert not check_admin_token(conn, db, token)
    assert "revoked" in magpie_cli("admin-token", "list", data_dir=data).stdout
