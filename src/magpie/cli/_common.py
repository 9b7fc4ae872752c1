"""What every command shares: opening the store, reading files, printing results, reporting errors."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import yaml

from magpie.config import Settings
from magpie.errors import InvalidRequest
from magpie.store import accounts
from magpie.store.db import Database, private_dir

Command = Callable[[argparse.Namespace, Settings], Any]
Register = Callable[[Any, argparse.ArgumentParser], None]

ENV_HELP = "environment name (default: %(default)s)"
DEFAULT_ENV = "development"


class UsageError(Exception):
    """A mistake on the command line or in a file the command reads: one line, exit status 2."""


def emit(args: argparse.Namespace, value: Any, text: str | None = None) -> None:
    """Print ``text`` for a person, or ``value`` as JSON with ``--json`` (or when there is no text)."""
    if args.json or text is None:
        print(json.dumps(msgspec.to_builtins(value), ensure_ascii=False, indent=2))
    else:
        print(text)


def open_db(settings: Settings) -> Database:
    """The store of these settings, migrated to the current schema (a SQLite one in a 0700 data directory)."""
    if settings.is_sqlite and not settings.database_url_override:
        private_dir(settings.data_dir)
    db = Database(settings.database_url)
    db.upgrade()
    return db


def env_id(db: Database, name: str) -> int:
    with db.transaction(write=False) as conn:
        return accounts.env_id_by_name(conn, db, name)


def read_text(path: str) -> str:
    """A file's text; ``-`` reads standard input."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


def load_document(path: str) -> Any:
    """A YAML or JSON document (JSON when the name ends in ``.json``)."""
    text = read_text(path)
    try:
        return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from None


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a file, stripped."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def add_env(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """``--env NAME``; under a command that takes it too (``settings show``), the outer value is kept."""
    if nested:
        parser.add_argument(
            "--env", default=argparse.SUPPRESS, metavar="NAME", help=f"environment name (default: {DEFAULT_ENV})"
        )
    else:
        parser.add_argument("--env", default=DEFAULT_ENV, metavar="NAME", help=ENV_HELP)
