"""CLI commands for campaigns, cohorts, push tokens, environment settings and statistics."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from magpie.config import Settings
from magpie.errors import InvalidRequest


def _load_file(path: str) -> Any:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"{path}: cannot parse: {str(exc).splitlines()[0]}") from exc


def _env_id(db: Any, name: str) -> int:
    from magpie.store import accounts

    with db.transaction(write=False) as conn:
        return accounts.env_id_by_name(conn, db, name)


def cmd_campaign_apply(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.cli import _db, _emit
    from magpie.store import campaigns

    db = _db(settings)
    env_id = _env_id(db, args.env)
    raw = _load_file(args.file)
    documents = raw if isinstance(raw, list) else [raw]
    results = []
    for document in documents:
        campaign, created = campaigns.apply_campaign(db, env_id=env_id, raw=document)
        results.append({"key": campaign.key, "name": campaign.name, "status": campaign.status, "created": created})
    _emit(
        args,
        results,
        "\n".join(
            f"{'created' if r['created'] else 'updated'} campaign {r['key']} ({r['name']}, {r['status']})"
            for r in results
        ),
    )


def cmd_campaign_list(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.api import views
    from magpie.cli import _db, _emit
    from magpie.store import campaigns

    db = _db(settings)
    env_id = _env_id(db, args.env)
    with db.transaction(write=False) as conn:
        listed = [views.campaign(row) for row in campaigns.list_campaigns(conn, db, env_id=env_id)]
    lines = [f"{c['key']}\t{c['status']}\t{c['purpose']}\t{c['provider']}\t{c['name']}" for c in listed]
    _emit(args, listed, "\n".join(lines) or "(no campaigns)")


def cmd_cohort_set(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.cli import _db, _emit
    from magpie.store import campaigns

    db = _db(settings)
    members = [line.strip() for line in Path(args.file).read_text().splitlines() if line.strip()]
    size = campaigns.set_cohort(db, env_id=_env_id(db, args.env), name=args.name, members=members)
    _emit(args, {"name": args.name, "size": size}, f"cohort {args.name}: {size} members")


def cmd_token_add(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.cli import _db, _emit
    from magpie.store.crypto import Cipher
    from magpie.store.tokens import RegisterToken
    from magpie.store.writer import GroupCommitWriter

    db = _db(settings)
    env_id = _env_id(db, args.env)
    writer = GroupCommitWriter(db=db, secret=Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir))
    writer.start()
    try:
        status = writer.run_sync(
            RegisterToken(
                key_hash=None,
                env_id=env_id,
                device_id=args.device_id,
                user_id=args.user_id,
                provider_type=args.provider,
                token=args.token,
            )
        )
    finally:
        writer.stop()
    _emit(
        args,
        {"deviceId": args.device_id, "userId": args.user_id, "providerType": args.provider, "status": status},
        f"token for device {args.device_id}: {status}",
    )


def cmd_env_settings(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.cli import _db, _emit
    from magpie.domain.environment import parse_settings
    from magpie.store import accounts

    db = _db(settings)
    env = accounts.update_environment_settings(
        db, name=args.env, settings=parse_settings(_load_file(args.file)), timezone=args.timezone
    )
    shown = {**env.settings, "providers": sorted(env.settings.get("providers", {}))}
    _emit(
        args,
        {"environment": env.name, "timezone": env.timezone, "settings": shown},
        f"updated settings of {env.name} (time zone {env.timezone})",
    )


def cmd_stats_dispatch(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.api import views
    from magpie.cli import _db, _emit
    from magpie.store.dispatches import dispatch_view

    db = _db(settings)
    env_id = _env_id(db, args.env)
    with db.transaction(write=False) as conn:
        view = views.dispatch(dispatch_view(conn, db, env_id=env_id, dispatch_id=args.dispatch_id))
    counts = view["counts"]
    text = (
        f"dispatch {view['dispatchId']} (campaign {view['campaignKey']}): {view['status']}\n"
        f"  requested {view['requested']}  sent {counts['SENT']}  failed {counts['FAILED']}  "
        f"excluded {counts['EXCLUDED']}  pending {counts['PENDING']}\n"
        + "".join(f"  excluded {reason}: {n}\n" for reason, n in sorted(view["excluded"].items()))
    )
    _emit(args, view, text.rstrip())


def cmd_stats_campaign(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.api import views
    from magpie.api.push import parse_time
    from magpie.cli import _db, _emit
    from magpie.store.dispatches import campaign_stats

    db = _db(settings)
    env_id = _env_id(db, args.env)
    now = int(time.time() * 1000)
    since = parse_time(args.since, name="--from", default=now - 7 * 86_400_000)
    until = parse_time(args.until, name="--to", default=now + 1)
    with db.transaction(write=False) as conn:
        stats = views.campaign_stats(
            campaign_stats(conn, db, env_id=env_id, campaign_key=args.key, since=since, until=until)
        )
    text = (
        f"campaign {args.key}: requested {stats['requested']} in {stats['dispatches']} dispatches, "
        f"sent {stats['sent']}, failed {stats['failed']}, excluded {stats['excludedTotal']}, "
        f"clicks {stats['clicks']} (CTR {stats['ctr']:.2%})"
        + "".join(f"\n  excluded {reason}: {n}" for reason, n in sorted(stats["excluded"].items()))
    )
    _emit(args, stats, text)


def cmd_consent_due(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.cli import _db, _emit
    from magpie.store.profiles import reconfirmations_due

    db = _db(settings)
    env_id = _env_id(db, args.env)
    channels = (args.channel,) if args.channel else ("push", "kakao", "sms")
    with db.transaction(write=False) as conn:
        due = reconfirmations_due(
            conn,
            db,
            env_id=env_id,
            channels=channels,
            now_ms=int(time.time() * 1000),
            within_ms=args.within_days * 86_400_000,
            limit=args.limit,
        )
    text = f"{len(due)} marketing consent(s) due for the two-year notice within {args.within_days} days" + "".join(
        f"\n  {d['userId']}  {d['channel']}  due {time.strftime('%Y-%m-%d', time.gmtime(d['dueAt'] / 1000))}"
        for d in due
    )
    _emit(args, {"due": due, "count": len(due)}, text)


def _register(sub: Any, common: argparse.ArgumentParser) -> None:
    campaign = sub.add_parser("campaign", parents=[common], help="push campaigns").add_subparsers(
        dest="campaign_cmd", required=True
    )
    apply = campaign.add_parser("apply", parents=[common], help="create or update campaigns from a YAML/JSON file")
    apply.add_argument("-f", "--file", required=True)
    apply.add_argument("--env", default="development")
    apply.set_defaults(fn=cmd_campaign_apply)
    listing = campaign.add_parser("list", parents=[common], help="list campaigns")
    listing.add_argument("--env", default="development")
    listing.set_defaults(fn=cmd_campaign_list)

    cohort = sub.add_parser("cohort", parents=[common], help="static cohorts").add_subparsers(
        dest="cohort_cmd", required=True
    )
    cs = cohort.add_parser("set", parents=[common], help="replace a cohort with the ids in a file (one per line)")
    cs.add_argument("name")
    cs.add_argument("-f", "--file", required=True)
    cs.add_argument("--env", default="development")
    cs.set_defaults(fn=cmd_cohort_set)

    token = sub.add_parser("token", parents=[common], help="push tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    ta = token.add_parser("add", parents=[common], help="register a device's push token")
    ta.add_argument("--env", default="development")
    ta.add_argument("--device-id", required=True)
    ta.add_argument("--user-id")
    ta.add_argument("--provider", choices=["FCM", "APN"], required=True)
    ta.add_argument("--token", required=True)
    ta.set_defaults(fn=cmd_token_add)

    env_settings = sub.add_parser("settings", parents=[common], help="set an environment's settings from a file")
    env_settings.add_argument("-f", "--file", required=True)
    env_settings.add_argument("--env", default="development")
    env_settings.add_argument("--timezone")
    env_settings.set_defaults(fn=cmd_env_settings)

    stats = sub.add_parser("stats", parents=[common], help="delivery statistics").add_subparsers(
        dest="stats_cmd", required=True
    )
    sd = stats.add_parser("dispatch", parents=[common], help="one dispatch")
    sd.add_argument("dispatch_id")
    sd.add_argument("--env", default="development")
    sd.set_defaults(fn=cmd_stats_dispatch)
    sc = stats.add_parser("campaign", parents=[common], help="a campaign over a time range")
    sc.add_argument("key", type=int)
    sc.add_argument("--env", default="development")
    sc.add_argument("--from", dest="since")
    sc.add_argument("--to", dest="until")
    sc.set_defaults(fn=cmd_stats_campaign)

    consent = sub.add_parser("consent", parents=[common], help="marketing consent under the law").add_subparsers(
        dest="consent_cmd", required=True
    )
    due = consent.add_parser("due", parents=[common], help="users due for the two-year re-confirmation notice")
    due.add_argument("--env", default="development")
    due.add_argument("--channel", choices=["push", "kakao", "sms"])
    due.add_argument("--within-days", type=int, default=30)
    due.add_argument("--limit", type=int, default=100_000)
    due.set_defaults(fn=cmd_consent_due)


def register(parsers: list[Callable[[Any, argparse.ArgumentParser], None]]) -> None:
    if _register not in parsers:
        parsers.append(_register)
