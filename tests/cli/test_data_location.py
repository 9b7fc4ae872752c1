"""One data location for every command, found the same way wherever it runs.

The order: ``--data-dir``/``--database-url``, then ``MAGPIE_DATA_DIR``/``MAGPIE_DATABASE_URL``, then
``$XDG_DATA_HOME/magpie`` (``~/.local/share/magpie``); never the current directory. A command that
finds no store or no environment says where it looked and which command would fix it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from magpie.config import Settings, default_data_dir


def _run(*args: str, home: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``magpie ARGS`` run from ``cwd`` with ``home`` as $HOME and no MAGPIE_* or XDG variable but ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MAGPIE_", "XDG_"))}
    environ.update(HOME=str(home), **env)
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "magpie.cli", *args], env=environ, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_default_data_directory_is_the_same_from_every_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = _run("env", "create", "production", home=home, cwd=tmp_path / "a")
    assert created.returncode == 0, created.stderr
    listed = _run("env", "list", "--json", home=home, cwd=tmp_path / "b" / "deeper")
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == ["production"]
    assert (home / ".local" / "share" / "magpie" / "magpie.db").exists()
    # Nothing was left in either working directory.
    assert list((tmp_path / "a").iterdir()) == [] and list((tmp_path / "b" / "deeper").iterdir()) == []


def test_xdg_data_home_moves_the_default_and_the_variable_and_flag_come_first(tmp_path: Path) -> None:
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    assert _run("env", "create", "xdg", home=home, cwd=tmp_path, XDG_DATA_HOME=str(xdg)).returncode == 0
    assert (xdg / "magpie" / "magpie.db").exists() and not (home / ".local").exists()
    variable = tmp_path / "from-variable"
    assert _run("env", "create", "var", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(variable)).returncode == 0
    flag = tmp_path / "from-flag"
    made = _run(
        "--data-dir", str(flag), "env", "create", "flag", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(variable)
    )
    assert made.returncode == 0, made.stderr
    names = {
        where: [
            e["name"]
            for e in json.loads(_run("env", "list", "--json", "--data-dir", str(where), home=home, cwd=tmp_path).stdout)
        ]
        for where in (xdg / "magpie", variable, flag)
    }
    assert names == {xdg / "magpie": ["xdg"], variable: ["var"], flag: ["flag"]}


def test_a_command_without_a_store_names_where_it_looked_and_creates_nothing(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    result = _run("campaign", "list", home=home, cwd=cwd)
    assert result.returncode == 1
    store = home / ".local" / "share" / "magpie" / "magpie.db"
    assert result.stderr.startswith(f"magpie: NOT_FOUND: no magpie store at {store} (the default data directory)")
    assert "--data-dir, then MAGPIE_DATA_DIR" in result.stderr and "`magpie serve`" in result.stderr
    assert not (home / ".local").exists() and list(cwd.iterdir()) == []
    explicit = _run("--data-dir", str(tmp_path / "nowhere"), "campaign", "list", home=home, cwd=cwd)
    assert (
        f"no magpie store at {tmp_path / 'nowhere' / 'magpie.db'} (data directory from --data-dir)" in explicit.stderr
    )
    assert not (tmp_path / "nowhere").exists()


def test_an_unknown_environment_names_the_store_the_environments_there_and_the_fix(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    assert _run("env", "create", "staging", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(data)).returncode == 0
    result = _run("campaign", "list", home=home, cwd=tmp_path / "other", MAGPIE_DATA_DIR=str(data))
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith(
        f"magpie: NOT_FOUND: no environment named 'development' in {data / 'magpie.db'} "
        "(data directory from MAGPIE_DATA_DIR); environments there: staging."
    ), message
    assert "`magpie env create development`" in message
    as_json = _run("campaign", "list", "--json", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(data))
    assert "environments there: staging" in json.loads(as_json.stderr)["message"]


def test_env_is_accepted_before_the_subcommand(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    assert _run("env", "create", "staging", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(data)).returncode == 0
    before = _run("--env", "staging", "campaign", "list", "--json", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(data))
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout) == []
    # Given twice, the one after the subcommand wins; a command without environments refuses it.
    both = _run(
        "--env", "nope", "campaign", "list", "--env", "staging", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(data)
    )
    assert both.returncode == 0, both.stderr
    refused = _run("--env", "staging", "env", "list", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(data))
    assert refused.returncode == 2 and "does not take an environment" in refused.stderr
    keys = _run("--env", "staging", "key", "list", "--json", home=home, cwd=tmp_path, MAGPIE_DATA_DIR=str(data))
    assert [k["environment"] for k in json.loads(keys.stdout)] == ["staging"]


def test_settings_default_to_the_xdg_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings().data_dir == Settings.from_env({}).data_dir == tmp_path / "xdg" / "magpie"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "magpie"
