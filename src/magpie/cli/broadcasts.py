"""``magpie broadcast``: reachable counts, test sends, "send now", occurrences and their controls."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from magpie.api.admin.admin_broadcasts import occurrence_view, progress_view, reach_view
from magpie.cli._common import add_env, emit, env_id, open_db
from magpie.config import Settings
from magpie.domain.campaigns import parse_campaign
from magpie.errors import InvalidRequest
from magpie.store import broadcasts, campaigns
from magpie.store.db import Connection, Database
from magpie.store.writer import GroupCommitWriter, Job

T = TypeVar("T")


def _now() -> int:
    return int(time.time() * 1000)


def _read(db: Database) -> Callable[[Callable[[Connection], T]], T]:
    def read(fn: Callable[[Connection], T]) -> T:
        with db.transaction(write=False) as conn:
            return fn(conn)

    return read


@contextmanager
def _writer(db: Database, settings: Settings) -> Iterator[Callable[[Job[Any]], Any]]:
    from magpie.store.crypto import Cipher

    writer = GroupCommitWriter(db=db, secret=Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir))
    writer.start()
    try:
        yield writer.run_sync
    finally:
        writer.stop()


def _progress_text(view: dict[str, Any]) -> str:
    occ, p = view["occurrence"], view["progress"]
    lines = [
        f"occurrence {occ['id']} of campaign {occ['campaignKey']} ({occ['kind']}, {occ['channel']}): {occ['state']}",
        f"planned {p['planned']}  sent {p['sent']}  failed {p['failed']}  excluded {p['excluded']}  "
        f"held {p['held']}  unknown {p['unknown']}  remaining {p['remaining']}  ({p['ratePerMinute']}/min)",
    ]
    if occ["unreachable"]:
        lines.append("not planned: " + ", ".join(f"{k} {v}" for k, v in sorted(occ["unreachable"].items())))
    if occ["error"]:
        lines.append(f"error: {occ['error']}")
    return "\n".join(lines)


def _show(args: argparse.Namespace, db: Database, env: int, occurrence_id: int) -> None:
    progress = _read(db)(
        lambda conn: broadcasts.occurrence_progress(conn, db, env_id=env, occurrence_id=occurrence_id, now_ms=_now())
    )
    view = progress_view(progress)
    emit(args, view, _progress_text(view))


def cmd_reach(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    row = _read(db)(lambda conn: campaigns.get_campaign(conn, db, env_id=env, key=args.key))
    found = broadcasts.reach(_read(db), db, env_id=env, campaign=parse_campaign(row.definition), now_ms=_now())
    view = reach_view(found)
    why = ", ".join(f"{k} {v}" for k, v in sorted(found.unreachable.items())) or "none"
    emit(
        args,
        view,
        f"{found.channel}: {found.reachable} reachable of {found.audience} in the audience "
        f"({found.users} users); not reachable: {why}",
    )


def cmd_test_send(args: argparse.Namespace, settings: Settings) -> None:
    if not 1 <= len(args.user) <= broadcasts.MAX_TEST_USERS:
        raise InvalidRequest(f"a test send names 1 to {broadcasts.MAX_TEST_USERS} users (--user)")
    db = open_db(settings)
    env = env_id(db, args.env)
    row = _read(db)(lambda conn: campaigns.get_campaign(conn, db, env_id=env, key=args.key))
    channel = parse_campaign(row.definition).channel
    with _writer(db, settings) as run:
        occurrence_id = run(
            broadcasts.TestSend(env_id=env, campaign_key=args.key, channel=channel, user_ids=list(args.user))
        )
    _show(args, db, env, occurrence_id)


def cmd_send_now(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    row = _read(db)(lambda conn: campaigns.get_campaign(conn, db, env_id=env, key=args.key))
    campaign = parse_campaign(row.definition)
    if campaign.status != "ACTIVE":
        raise InvalidRequest(f"campaign {args.key} is {campaign.status}: only an ACTIVE campaign is sent")
    with _writer(db, settings) as run:
        occurrence_id = run(
            broadcasts.CreateOccurrence(
                env_id=env,
                campaign_key=args.key,
                slot_ms=_now(),
                channel=campaign.channel,
                kind=broadcasts.OccurrenceKind.NOW,
            )
        )
    _show(args, db, env, occurrence_id)


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    rows = _read(db)(lambda conn: broadcasts.list_occurrences(conn, db, env_id=env, campaign_key=args.key))
    views = [occurrence_view(r) for r in rows]
    text = "\n".join(f"{v['id']}\t{v['kind']}\t{v['state']}\tslot {v['slot']}\tplanned {v['planned']}" for v in views)
    emit(args, {"occurrences": views}, text or "(no occurrences)")


def cmd_stats(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    rows = _read(db)(
        lambda conn: broadcasts.occurrence_statistics(conn, db, env_id=env, campaign_key=args.key, now_ms=_now())
    )
    if args.csv:
        sys.stdout.write(broadcasts.statistics_csv(rows))
        return
    views = [progress_view(r) for r in rows]
    text = "\n".join(
        f"{p.occurrence.id}\t{p.occurrence.state}\tplanned {p.planned}\tsent {p.sent}\tfailed {p.failed}\t"
        f"excluded {p.excluded}\theld {p.held}\tunknown {p.unknown}\tremaining {p.remaining}"
        for p in rows
    )
    emit(args, {"occurrences": views}, text or "(no occurrences)")


def cmd_show(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    _show(args, db, env_id(db, args.env), args.occurrence_id)


def _control(action: broadcasts.Control) -> Callable[[argparse.Namespace, Settings], None]:
    def command(args: argparse.Namespace, settings: Settings) -> None:
        db = open_db(settings)
        env = env_id(db, args.env)
        with _writer(db, settings) as run:
            run(broadcasts.ControlOccurrence(env_id=env, occurrence_id=args.occurrence_id, action=action))
        _show(args, db, env, args.occurrence_id)

    return command


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    broadcast = sub.add_parser(
        "broadcast", parents=[common], help="broadcasts: reach, test send, send now, occurrences"
    ).add_subparsers(dest="broadcast_cmd", required=True)
    commands: tuple[tuple[str, Callable[[argparse.Namespace, Settings], None], str], ...] = (
        ("reach", cmd_reach, "count who a campaign would reach now, and why the rest would not be reached"),
        ("send-now", cmd_send_now, "start an occurrence of a campaign now, to its whole audience"),
        ("list", cmd_list, "list a campaign's occurrences, newest first"),
    )
    for name, fn, text in commands:
        parser = broadcast.add_parser(name, parents=[common], help=text)
        parser.add_argument("key", type=int, help="the campaign key")
        add_env(parser)
        parser.set_defaults(fn=fn)
    stats = broadcast.add_parser("stats", parents=[common], help="statistics of a campaign's occurrences, newest first")
    stats.add_argument("key", type=int, help="the campaign key")
    stats.add_argument("--csv", action="store_true", help="one CSV line per occurrence")
    add_env(stats)
    stats.set_defaults(fn=cmd_stats)
    test = broadcast.add_parser("test-send", parents=[common], help="send a campaign now to 1 to 5 named users")
    test.add_argument("key", type=int, help="the campaign key")
    test.add_argument("--user", action="append", required=True, help="a userId (repeat, at most 5)")
    add_env(test)
    test.set_defaults(fn=cmd_test_send)
    controls: tuple[tuple[str, Callable[[argparse.Namespace, Settings], None], str], ...] = (
        ("show", cmd_show, "an occurrence's state and progress"),
        ("pause", _control(broadcasts.Control.PAUSE), "pause an occurrence"),
        ("resume", _control(broadcasts.Control.RESUME), "resume a paused occurrence"),
        ("cancel", _control(broadcasts.Control.CANCEL), "cancel an occurrence: nothing more is sent"),
    )
    for name, fn, text in controls:
        parser = broadcast.add_parser(name, parents=[common], help=text)
        parser.add_argument("occurrence_id", type=int, help="the occurrence id")
        add_env(parser)
        parser.set_defaults(fn=fn)
