"""``magpie phone reindex``: rebuild the blind index that lets a gateway's 080 opt-out find its user."""

from __future__ import annotations

import argparse
from typing import Any

from magpie.cli._common import UsageError, add_env, emit, env_id, open_db
from magpie.config import Settings
from magpie.store.crypto import Cipher
from magpie.store.profiles import ReindexPhones
from magpie.store.writer import GroupCommitWriter


def cmd_phone_reindex(args: argparse.Namespace, settings: Settings) -> None:
    if not 1 <= args.batch <= 10_000:
        raise UsageError("--batch must be 1 to 10000")
    db = open_db(settings)
    only = None if args.env is None else env_id(db, args.env)
    # The index is keyed by the data key: the same key the server decrypts the numbers with.
    writer = GroupCommitWriter(db=db, secret=Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir))
    writer.start()
    totals = {"users": 0, "phones": 0, "added": 0, "removed": 0, "unreadable": 0, "batches": 0}
    try:
        after: tuple[int, str] | None = None
        while True:
            # One short writer transaction per page: the server keeps writing between them.
            page = writer.run_sync(ReindexPhones(after=after, limit=args.batch, env_id=only))
            totals["batches"] += 1
            for name in ("users", "phones", "added", "removed", "unreadable"):
                totals[name] += getattr(page, name)
            if page.after is None:
                break
            after = page.after
    finally:
        writer.stop()
    text = (
        f"checked {totals['users']} users ({totals['phones']} with a phone number) in {totals['batches']} batches: "
        f"{totals['added']} index rows added, {totals['removed']} removed"
    )
    if totals["unreadable"]:
        text += (
            f"\n{totals['unreadable']} numbers could not be decrypted with this data key and were left alone: "
            "is MAGPIE_SECRET_KEY (or the data directory's secret.key) the server's?"
        )
    emit(args, totals, text)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    phone = sub.add_parser("phone", parents=[common], help="stored phone numbers").add_subparsers(
        dest="phone_cmd", required=True
    )
    reindex = phone.add_parser(
        "reindex",
        parents=[common],
        help="rebuild the phone-number index 080 opt-outs use (run once after upgrading past 0005_phone_channels)",
    )
    reindex.add_argument(
        "--batch", type=int, default=500, help="users per writer transaction (default %(default)s, at most 10000)"
    )
    add_env(reindex, default=None, help="only this environment (default: every environment)")
    reindex.set_defaults(fn=cmd_phone_reindex)
