"""The ``magpie`` command: serve, worker, db, backup, env, key, admin-token, user, campaign, cohort,
token, settings, provider, stats, consent, phone, broadcast.

Every command takes ``--json`` for machine-readable output. Mistakes end with one line on stderr
and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import Any

import psycopg

import magpie
from magpie.cli import accounts, broadcasts, consent, phone, push, server
from magpie.cli._common import FileProblems, UsageError, data_location, environment_missing
from magpie.config import Settings
from magpie.errors import MagpieError, NotFound
from magpie.store.crypto import BadSecretKey
from magpie.store.db import keep_files_private

__all__ = ["build_parser", "main"]


def _common(*, suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after the subcommand.

    Below the top level their defaults are suppressed, so that an option given before the
    subcommand is not reset by the subcommand's own (absent) copy of it.
    """
    default: Any = argparse.SUPPRESS if suppress else None
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if suppress else False, help="machine-readable output"
    )
    if not suppress:  # the commands that take --env declare it themselves (magpie.cli._common.add_env)
        common.add_argument(
            "--env",
            default=argparse.SUPPRESS,
            metavar="NAME",
            help="environment of the commands that take one (also accepted after the command)",
        )
    common.add_argument(
        "--data-dir",
        default=default,
        metavar="DIR",
        help="data directory (default: MAGPIE_DATA_DIR, else ~/.local/share/magpie)",
    )
    common.add_argument(
        "--database-url",
        default=default,
        metavar="URL",
        help="postgresql://user:password@host:5432/db (default: MAGPIE_DATABASE_URL or SQLite in the data directory)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magpie",
        description="Self-hosted, Hackle-compatible user properties, consent, events and push campaigns.",
        epilog="Settings come from MAGPIE_* environment variables (docs/configuration.md). Every command finds "
        "its data the same way, wherever it runs: --database-url or --data-dir, then MAGPIE_DATABASE_URL or "
        "MAGPIE_DATA_DIR, then SQLite in $XDG_DATA_HOME/magpie (~/.local/share/magpie). "
        "Run `magpie COMMAND --help` for a command's options.",
        parents=[_common(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"magpie {magpie.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(suppress=True)
    for module in (server, accounts, push, consent, phone, broadcasts):
        module.register(sub, common)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    changes: dict[str, Any] = {}
    if args.data_dir:
        changes["data_dir"] = Path(args.data_dir)
    if args.database_url:
        changes["database_url_override"] = args.database_url
    for name in ("host", "port", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    return settings.with_(**changes) if changes else settings


def _fail(
    args: argparse.Namespace | None,
    code: str,
    message: str,
    status: int = 1,
    problems: list[dict[str, Any]] | None = None,
) -> int:
    """The error on stderr: one line (after one line per problem of a file), or one JSON object."""
    if args is not None and getattr(args, "json", False):
        body: dict[str, Any] = {"code": code, "message": message}
        if problems:
            body["problems"] = problems
        print(json.dumps(body, ensure_ascii=False), file=sys.stderr)
    else:
        for problem in problems or ():
            print(push.problem_line(problem), file=sys.stderr)
        print(f"magpie: {code}: {message}", file=sys.stderr)
    return status


def _database_error(exc: BaseException, settings: Settings | None) -> str:
    where = data_location(settings) if settings is not None else "the database"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot use the database at {where}: {first}"


def main(argv: list[str] | None = None) -> int:
    keep_files_private()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "env_default"):
        if hasattr(args, "env"):
            parser.error(f"--env: `magpie {args.command}` does not take an environment")
    elif not hasattr(args, "env"):
        args.env = args.env_default
    settings: Settings | None = None
    try:
        settings = settings_from(args)
        args.fn(args, settings)
    except NotFound as exc:
        message = exc.message
        if settings is not None and message.startswith("no environment named"):
            message = environment_missing(message, settings)
        return _fail(args, exc.code, message)
    except FileProblems as exc:
        return _fail(args, exc.code, exc.message, problems=exc.problems)
    except MagpieError as exc:
        return _fail(args, exc.code, exc.message)
    except (UsageError, BadSecretKey) as exc:
        return _fail(args, "INVALID_REQUEST", str(exc), 2)
    except (psycopg.Error, sqlite3.Error) as exc:
        return _fail(args, "DATABASE_UNAVAILABLE", _database_error(exc, settings))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `magpie … | head`: the reader has gone, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the last resort: one line, with the traceback only in the debug log
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            return _fail(args, "DATABASE_UNAVAILABLE", _database_error(exc.orig or exc, settings))
        if isinstance(exc, OSError):
            return _fail(args, "OS_ERROR", f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        if settings is not None and settings.log_level.lower() == "debug":
            traceback.print_exc()
        return _fail(args, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc} (MAGPIE_LOG_LEVEL=debug logs the traceback)")
    return 0
