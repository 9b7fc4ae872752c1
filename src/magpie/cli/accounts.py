"""Account commands: environments, API keys, admin tokens and users."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from magpie.api.hackle import views
from magpie.cli._common import add_env, emit, open_db
from magpie.config import Settings
from magpie.domain.environment import redact_settings
from magpie.store import accounts, events, profiles
from magpie.store.crypto import Cipher


def _state(revoked_at: int | None) -> str:
    return "revoked" if revoked_at else "active"


def shown(env: accounts.Environment) -> accounts.Environment:
    """An environment as the CLI prints it: provider credentials redacted (they are write-only)."""
    return msgspec.structs.replace(env, settings=redact_settings(env.settings))


def cmd_env_create(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings, create=True)
    env = accounts.create_environment(db, name=args.name, timezone=args.timezone)
    key, info = accounts.create_api_key(db, environment=env.name, name="default")
    emit(
        args,
        {"environment": shown(env), "apiKey": key, "key": info},
        f"created environment {env.name} (time zone {env.timezone})\nAPI key: {key}  (shown once)",
    )


def cmd_env_list(args: argparse.Namespace, settings: Settings) -> None:
    envs = [shown(e) for e in accounts.list_environments(open_db(settings))]
    emit(args, envs, "\n".join(f"{e.name}\t{e.timezone}" for e in envs) or "(no environments)")


def cmd_key_create(args: argparse.Namespace, settings: Settings) -> None:
    key, info = accounts.create_api_key(open_db(settings), environment=args.env, name=args.name)
    emit(args, {"apiKey": key, "key": info}, f"API key for {args.env}: {key}  (shown once)")


def cmd_key_list(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    if args.env is not None:
        accounts.get_environment(db, args.env)  # an unknown environment is an error, not an empty list
    keys = accounts.list_api_keys(db, environment=args.env)
    lines = [f"{k.prefix}…\t{k.environment}\t{k.name}\t{_state(k.revoked_at)}" for k in keys]
    emit(args, keys, "\n".join(lines) or "(no keys)")


def cmd_key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    info = accounts.revoke_api_key(open_db(settings), key_or_prefix=args.key)
    emit(args, info, f"revoked {info.prefix}…")


def cmd_admin_token_create(args: argparse.Namespace, settings: Settings) -> None:
    token = accounts.create_admin_token(open_db(settings, create=True), name=args.name)
    emit(args, {"adminToken": token}, f"admin token: {token}  (shown once)")


def cmd_admin_token_list(args: argparse.Namespace, settings: Settings) -> None:
    tokens = accounts.list_admin_tokens(open_db(settings))
    lines = [f"{t.prefix}…\t{t.name}\t{_state(t.revoked_at)}" for t in tokens]
    emit(args, tokens, "\n".join(lines) or "(no admin tokens)")


def cmd_admin_token_revoke(args: argparse.Namespace, settings: Settings) -> None:
    info = accounts.revoke_admin_token(open_db(settings), token_or_prefix=args.token)
    emit(args, info, f"revoked admin token {info.prefix}…")


def cmd_user_show(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
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
    emit(args, view)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    env = sub.add_parser("env", parents=[common], help="environments").add_subparsers(dest="env_cmd", required=True)
    create = env.add_parser("create", parents=[common], help="create an environment and its first API key")
    create.add_argument("name", help="1-64 lowercase letters, digits, '-' or '_'")
    create.add_argument(
        "--timezone",
        default="Asia/Seoul",
        metavar="TZ",
        help="IANA time zone for night-time rules (default: %(default)s)",
    )
    create.set_defaults(fn=cmd_env_create)
    env.add_parser("list", parents=[common], help="list environments").set_defaults(fn=cmd_env_list)

    key = sub.add_parser("key", parents=[common], help="API keys").add_subparsers(dest="key_cmd", required=True)
    kc = key.add_parser("create", parents=[common], help="create an API key (shown once)")
    add_env(kc)
    kc.add_argument("--name", default="", help="a label shown by key list (default: none)")
    kc.set_defaults(fn=cmd_key_create)
    kl = key.add_parser("list", parents=[common], help="list API keys (prefixes only)")
    add_env(kl, default=None, help="only this environment's keys (default: every environment)")
    kl.set_defaults(fn=cmd_key_list)
    kr = key.add_parser("revoke", parents=[common], help="revoke an API key")
    kr.add_argument("key", help="the whole key, or the prefix key list shows")
    kr.set_defaults(fn=cmd_key_revoke)

    admin = sub.add_parser("admin-token", parents=[common], help="admin tokens (without a subcommand: create one)")
    admin.add_argument("--name", default="", help="a label shown by admin-token list (default: none)")
    admin.set_defaults(fn=cmd_admin_token_create)
    tokens = admin.add_subparsers(dest="admin_cmd")
    ac = tokens.add_parser("create", parents=[common], help="create an admin token (shown once)")
    ac.add_argument("--name", default=argparse.SUPPRESS, help="a label shown by admin-token list (default: none)")
    ac.set_defaults(fn=cmd_admin_token_create)
    tokens.add_parser("list", parents=[common], help="list admin tokens (prefixes only)").set_defaults(
        fn=cmd_admin_token_list
    )
    ar = tokens.add_parser("revoke", parents=[common], help="revoke an admin token")
    ar.add_argument("token", help="the whole token, or the prefix admin-token list shows")
    ar.set_defaults(fn=cmd_admin_token_revoke)

    user = sub.add_parser("user", parents=[common], help="users").add_subparsers(dest="user_cmd", required=True)
    us = user.add_parser("show", parents=[common], help="show a user (or a device) with its recent events")
    us.add_argument("id", help="the userId (or, with --device, the deviceId)")
    add_env(us)
    us.add_argument("--device", action="store_true", help="the id is a deviceId")
    us.add_argument("--events", type=int, default=20, metavar="N", help="recent events to show (default: %(default)s)")
    us.set_defaults(fn=cmd_user_show)
