"""The ``magpie`` command: serve, worker, db, env, key, user, campaign, token, stats.

Every command takes ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from magpie.config import Settings
from magpie.errors import MagpieError
from magpie.store import accounts
from magpie.store.crypto import Cipher
from magpie.store.db import Database

Command = Callable[[argparse.Namespace, Settings], Any]
_COMMANDS: dict[str, Command] = {}


def _emit(args: argparse.Namespace, value: Any, text: str | None = None) -> None:
    if args.json:
        print(json.dumps(msgspec.to_builtins(value), ensure_ascii=False, indent=2))
    elif text is not None:
        print(text)
    else:
        print(json.dumps(msgspec.to_builtins(value), ensure_ascii=False, indent=2))


def _db(settings: Settings) -> Database:
    db = Database(settings.database_url)
    db.upgrade()
    return db


def bootstrap(db: Database, settings: Settings) -> dict[str, Any] | None:
    """On an empty store: a development environment, a key, an admin token and a demo campaign."""
    if not accounts.is_empty(db):
        return None
    env = accounts.create_environment(db, name="development")
    key, _ = accounts.create_api_key(db, environment=env.name, name="bootstrap")
    token = accounts.create_admin_token(db, name="bootstrap")
    result: dict[str, Any] = {"environment": env.name, "apiKey": key, "adminToken": token}
    from magpie.store import campaigns

    demo = campaigns.bootstrap_demo(db, env_id=env.id)
    if demo is not None:
        result["demoCampaignKey"] = demo
    return result


# -- commands ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from magpie.app import create_app
    from magpie.logs import configure_logging

    configure_logging(settings.log_level)
    db = _db(settings)
    if settings.bootstrap:
        created = bootstrap(db, settings)
        if created is not None:
            _emit(
                args,
                created,
                "magpie: created a new store with a ready demo environment.\n"
                f"  environment:  {created['environment']}\n"
                f"  API key:      {created['apiKey']}\n"
                f"  admin token:  {created['adminToken']}\n"
                "  (shown once: magpie keeps only their hashes)",
            )
            sys.stdout.flush()
    app = create_app(settings)
    listen: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if os.environ.get("MAGPIE_REUSE_PORT") == "1":
        # Several `magpie serve` processes on one port, balanced by the kernel.
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.port))
        listen = {"fd": sock.fileno()}
    uvicorn.run(
        app,
        **listen,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
        backlog=4096,
    )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.dispatch.worker import run_worker
    from magpie.logs import configure_logging

    configure_logging(settings.log_level)
    _db(settings)
    run_worker(settings)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    db = _db(settings)
    _emit(args, {"revision": db.current_revision()}, f"schema at revision {db.current_revision()}")


def cmd_env_create(args: argparse.Namespace, settings: Settings) -> None:
    db = _db(settings)
    env = accounts.create_environment(db, name=args.name, timezone=args.timezone)
    key, info = accounts.create_api_key(db, environment=env.name, name="default")
    _emit(
        args,
        {"environment": env, "apiKey": key, "key": info},
        f"created environment {env.name} (time zone {env.timezone})\nAPI key: {key}  (shown once)",
    )


def cmd_env_list(args: argparse.Namespace, settings: Settings) -> None:
    envs = accounts.list_environments(_db(settings))
    _emit(args, envs, "\n".join(f"{e.name}\t{e.timezone}" for e in envs) or "(no environments)")


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> None:
    key, info = accounts.create_api_key(_db(settings), environment=args.env, name=args.name)
    _emit(args, {"apiKey": key, "key": info}, f"API key for {args.env}: {key}  (shown once)")


def cmd_key_list(args: argparse.Namespace, settings: Settings) -> None:
    keys = accounts.list_api_keys(_db(settings), environment=args.env)
    lines = [f"{k.prefix}…\t{k.environment}\t{k.name}\t{'revoked' if k.revoked_at else 'active'}" for k in keys]
    _emit(args, keys, "\n".join(lines) or "(no keys)")


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    info = accounts.revoke_api_key(_db(settings), key_or_prefix=args.key)
    _emit(args, info, f"revoked {info.prefix}…")


def cmd_admin_token(args: argparse.Namespace, settings: Settings) -> None:
    token = accounts.create_admin_token(_db(settings), name=args.name)
    _emit(args, {"adminToken": token}, f"admin token: {token}  (shown once)")


def cmd_user_show(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.api import views
    from magpie.store import events, profiles

    db = _db(settings)
    cipher = Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir)
    with db.transaction(write=False) as conn:
        env_id = accounts.env_id_by_name(conn, db, args.env)
        if args.device:
            view = views.device(profiles.device_view(conn, db, cipher, env_id=env_id, device_id=args.id))
        else:
            view = views.row(profiles.user_view(conn, db, cipher, env_id=env_id, user_id=args.id))
        recent = events.recent_events(
            conn,
            db,
            env_id=env_id,
            user_id=view.get("userId") or view.get("linkedUserId"),
            device_id=args.id if args.device else None,
            limit=args.events,
        )
    view["recentEvents"] = views.rows(recent)
    _emit(args, view)


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--data-dir", help="data directory (default ./.magpie or MAGPIE_DATA_DIR)")
    common.add_argument("--database-url", help="e.g. postgresql://user@host/db (default: SQLite in the data dir)")

    parser = argparse.ArgumentParser(prog="magpie", description=__doc__.splitlines()[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="serve the API with an in-process worker")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="in-process dispatch workers (0: API only)")
    serve.set_defaults(fn=cmd_serve)

    worker = sub.add_parser("worker", parents=[common], help="run a dispatch worker process")
    worker.set_defaults(fn=cmd_worker)

    db = sub.add_parser("db", parents=[common], help="database schema").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("upgrade", parents=[common], help="apply migrations").set_defaults(fn=cmd_db_upgrade)

    env = sub.add_parser("env", parents=[common], help="environments").add_subparsers(dest="env_cmd", required=True)
    create = env.add_parser("create", parents=[common], help="create an environment and its first key")
    create.add_argument("name")
    create.add_argument("--timezone", default="Asia/Seoul")
    create.set_defaults(fn=cmd_env_create)
    env.add_parser("list", parents=[common], help="list environments").set_defaults(fn=cmd_env_list)

    key = sub.add_parser("key", parents=[common], help="API keys").add_subparsers(dest="key_cmd", required=True)
    kc = key.add_parser("create", parents=[common], help="create an API key")
    kc.add_argument("--env", required=True)
    kc.add_argument("--name", default="")
    kc.set_defaults(fn=cmd_key_create)
    kl = key.add_parser("list", parents=[common], help="list API keys")
    kl.add_argument("--env")
    kl.set_defaults(fn=cmd_key_list)
    kr = key.add_parser("revoke", parents=[common], help="revoke an API key (whole key or listed prefix)")
    kr.add_argument("key")
    kr.set_defaults(fn=cmd_key_revoke)

    admin = sub.add_parser("admin-token", parents=[common], help="create an admin token")
    admin.add_argument("--name", default="")
    admin.set_defaults(fn=cmd_admin_token)

    user = sub.add_parser("user", parents=[common], help="users").add_subparsers(dest="user_cmd", required=True)
    us = user.add_parser("show", parents=[common], help="show a user (or --device) with recent events")
    us.add_argument("id")
    us.add_argument("--env", default="development")
    us.add_argument("--device", action="store_true", help="the id is a deviceId")
    us.add_argument("--events", type=int, default=20, help="recent events to show")
    us.set_defaults(fn=cmd_user_show)

    for register in _EXTRA_PARSERS:
        register(sub, common)
    return parser


_EXTRA_PARSERS: list[Callable[[Any, argparse.ArgumentParser], None]] = []


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
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


def main(argv: list[str] | None = None) -> int:
    from magpie import cli_push

    cli_push.register(_EXTRA_PARSERS)
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    try:
        args.fn(args, settings)
    except MagpieError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"code": exc.code, "message": exc.message}), file=sys.stderr)
        else:
            print(f"magpie: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
