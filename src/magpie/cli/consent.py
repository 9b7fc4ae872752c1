"""``magpie consent due``: users whose marketing consent is due for the two-year re-confirmation notice."""

from __future__ import annotations

import argparse
import time
from typing import Any

from magpie.cli._common import add_env, emit, env_id, open_db
from magpie.config import Settings
from magpie.store.profiles import reconfirmations_due


def cmd_consent_due(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    channels = (args.channel,) if args.channel else ("push", "kakao", "sms")
    with db.transaction(write=False) as conn:
        due = reconfirmations_due(
            conn,
            db,
            env_id=env,
            channels=channels,
            now_ms=int(time.time() * 1000),
            within_ms=args.within_days * 86_400_000,
            limit=args.limit,
        )
    text = f"{len(due)} marketing consent(s) due for the two-year notice within {args.within_days} days" + "".join(
        f"\n  {d['userId']}  {d['channel']}  due {time.strftime('%Y-%m-%d', time.gmtime(d['dueAt'] / 1000))}"
        for d in due
    )
    emit(args, {"due": due, "count": len(due)}, text)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    consent = sub.add_parser("consent", parents=[common], help="marketing consent under the law").add_subparsers(
        dest="consent_cmd", required=True
    )
    due = consent.add_parser("due", parents=[common], help="users due for the two-year re-confirmation notice")
    add_env(due)
    due.add_argument(
        "--channel", choices=["push", "kakao", "sms"], help="one channel's consent (default: every channel)"
    )
    due.add_argument(
        "--within-days", type=int, default=30, help="include notices falling due within this many days (default 30)"
    )
    due.add_argument("--limit", type=int, default=100_000, help="list at most this many (default 100000)")
    due.set_defaults(fn=cmd_consent_due)
