"""What every command shares: opening the store, reading files, printing results, reporting errors."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import yaml

from magpie.config import Settings, default_data_dir
from magpie.errors import InvalidCampaign, InvalidRequest, NotFound
from magpie.store import accounts
from magpie.store.db import Database, private_dir

Command = Callable[[argparse.Namespace, Settings], Any]
Register = Callable[[Any, argparse.ArgumentParser], None]

ENV_HELP = "environment name (default: %(default)s)"  # filled in by add_env
DEFAULT_ENV = "development"


class UsageError(Exception):
    """A mistake on the command line or in a file the command reads: one line, exit status 2."""


def emit(args: argparse.Namespace, value: Any, text: str | None = None) -> None:
    """Print ``text`` for a person, or ``value`` as JSON with ``--json`` (or when there is no text)."""
    if args.json or text is None:
        print(json.dumps(msgspec.to_builtins(value), ensure_ascii=False, indent=2))
    else:
        print(text)


def sqlite_file(settings: Settings) -> Path:
    """The SQLite file of SQLite settings: in the data directory, or the one a ``sqlite:///`` URL names."""
    url = settings.database_url
    return Path(url.split(":///", 1)[1]).resolve() if ":///" in url else settings.data_dir.resolve() / "magpie.db"


def data_location(settings: Settings) -> str:
    """Where the data lives, safe to print: the SQLite file, or the database URL without its password."""
    if settings.is_sqlite:
        return str(sqlite_file(settings))
    parts = urlsplit(settings.database_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, "", ""))


LOOKUP_ORDER = "--data-dir, then MAGPIE_DATA_DIR, then the default ~/.local/share/magpie"


def chosen_by(settings: Settings) -> str:
    """How the data location was found: the flag, the variable or the default (for error messages)."""
    if settings.database_url_override:
        from_env = os.environ.get("MAGPIE_DATABASE_URL", "") == settings.database_url_override
        return "from MAGPIE_DATABASE_URL" if from_env else "from --database-url"
    if os.environ.get("MAGPIE_DATA_DIR") and Path(os.environ["MAGPIE_DATA_DIR"]) == settings.data_dir:
        return "data directory from MAGPIE_DATA_DIR"
    if settings.data_dir == default_data_dir():
        return "the default data directory"
    return "data directory from --data-dir"


def location(settings: Settings) -> str:
    """Where the data lives and how that was decided, safe to print (no password).

    >>> location(Settings(data_dir=Path("/srv/m")))
    '/srv/m/magpie.db (data directory from --data-dir)'
    """
    return f"{data_location(settings)} ({chosen_by(settings)})"


def open_db(settings: Settings, *, create: bool = False) -> Database:
    """The store of these settings, migrated to the current schema.

    Only the commands that make a store (``serve``, ``worker``, ``db upgrade``, ``env create``,
    ``admin-token``, ``restore``) pass ``create``: every other command refuses a data directory without a store rather
    than leave an empty one behind.
    """
    if settings.is_sqlite and not create and not sqlite_file(settings).exists():
        raise NotFound(
            f"no magpie store at {location(settings)}; looked in {LOOKUP_ORDER}. "
            "Start `magpie serve` once to create one, or point --data-dir or MAGPIE_DATA_DIR at an existing "
            "data directory"
        )
    if settings.is_sqlite and not settings.database_url_override:
        private_dir(settings.data_dir)
    db = Database(settings.database_url)
    db.upgrade()
    return db


def environment_missing(message: str, settings: Settings) -> str:
    """An unknown environment's message with where magpie looked and the command that creates it."""
    name = message.split("'", 1)[1].rsplit("'", 1)[0] if message.count("'") >= 2 else "NAME"
    try:
        known = [e.name for e in accounts.list_environments(Database(settings.database_url))]
    except Exception:  # the message is the point; the list is a courtesy
        known = []
    there = f"environments there: {', '.join(known)}" if known else "there are no environments there"
    return (
        f"{message} in {location(settings)}; {there}. Create it with `magpie env create {name}`, "
        f"or choose another with --env (the data location is found by {LOOKUP_ORDER})"
    )


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


def _parse_error(path: str, exc: Exception) -> InvalidRequest:
    """A YAML or JSON syntax error as ``FILE:LINE:COLUMN: cannot parse: PROBLEM``, as the parser placed it."""
    if isinstance(exc, json.JSONDecodeError):
        return InvalidRequest(f"{path}:{exc.lineno}:{exc.colno}: cannot parse: {exc.msg}")
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        context = f" ({exc.context})" if exc.context else ""
        return InvalidRequest(f"{path}:{mark.line + 1}:{mark.column + 1}: cannot parse: {exc.problem}{context}")
    return InvalidRequest(f"{path}: cannot parse: {str(exc).splitlines()[0]}")


def load_document(path: str) -> Any:
    """A YAML or JSON document (JSON when the name ends in ``.json``)."""
    return load_located(path).value


@dataclass(frozen=True)
class Located:
    """A parsed YAML or JSON file with the positions of its nodes, to say where a problem is."""

    path: str
    value: Any
    node: yaml.Node | None

    def position(self, steps: tuple[int | str, ...], *, on_key: bool = False) -> tuple[int, int]:
        """1-based line and column of the value at ``steps`` (of its key with ``on_key``), or of the
        nearest enclosing node that exists (a missing field is reported at its object)."""
        node = self.node
        if node is None:
            return 1, 1
        for n, step in enumerate(steps):
            last = n == len(steps) - 1
            if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
            elif isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step), None)
                if pair is None:
                    break
                node = pair[0] if last and on_key else pair[1]
            else:
                break
        return node.start_mark.line + 1, node.start_mark.column + 1


def load_located(path: str) -> Located:
    """A YAML or JSON document with its node positions; syntax errors name their line and column."""
    text = read_text(path)
    try:
        value = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise _parse_error(path, exc) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)  # JSON is (nearly always) YAML too
    except yaml.YAMLError:
        node = None
    return Located(path, value, node)


class FileProblems(InvalidCampaign):
    """Several problems found in one file; nothing of it was applied."""

    def __init__(self, message: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.problems = problems


def read_lines(path: str) -> list[str]:
    """The non-blank lines of a file, stripped."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def add_env(parser: argparse.ArgumentParser, *, default: str | None = DEFAULT_ENV, help: str = ENV_HELP) -> None:
    """``--env NAME``, accepted before the subcommand too (``magpie --env staging campaign list``).

    Every copy of the option leaves the value unset when absent (``SUPPRESS``), so that a copy deeper
    in the command line never resets one given earlier; ``main`` then fills in the command's default.
    """
    parser.add_argument("--env", default=argparse.SUPPRESS, metavar="NAME", help=help % {"default": default})
    parser.set_defaults(env_default=default)
