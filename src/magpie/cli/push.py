"""Campaign commands (every channel), cohorts, push tokens, environment settings, providers and statistics."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from magpie.api.hackle import views
from magpie.cli import experiments
from magpie.cli._common import (
    FileProblems,
    Located,
    UsageError,
    add_env,
    emit,
    env_id,
    load_document,
    load_located,
    open_db,
    read_lines,
)
from magpie.config import Settings
from magpie.domain.campaigns import Problem, campaign_problems
from magpie.domain.environment import DEFAULTS, effective, keep_stored_secrets, parse_settings, redact_settings
from magpie.domain.messages import where
from magpie.errors import InvalidRequest, NotFound
from magpie.store import accounts, campaigns, conversions, tokens
from magpie.store.dispatches import dispatch_view
from magpie.store.stats import campaign_stats

TIME_HELP = "epoch milliseconds or ISO-8601 (2026-11-01 or 2026-11-01T09:00:00+09:00)"
# UNKNOWN: Kakao and SMS dispatches only (a gateway that may have taken a message but would not say).
STATUS_ORDER = ("SENT", "FAILED", "UNKNOWN", "EXCLUDED", "PENDING")


# The push providers by every spelling the API, the settings file and the two commands use, in any case.
_PUSH_PROVIDERS = {"fcm": "fcm", "apn": "apns", "apns": "apns"}


def push_provider(value: str) -> str:
    """``fcm`` or ``apns`` from any of FCM, fcm, APN, APNs, apns (``--provider`` of token add and provider check).

    >>> [push_provider(v) for v in ("FCM", "apn", "APNs")]
    ['fcm', 'apns', 'apns']
    """
    try:
        return _PUSH_PROVIDERS[value.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected fcm (Android) or apns (iOS); FCM and APN too") from None


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"magpie: warning: {line}", file=sys.stderr)


def _file_problems(file: Located, documents: list[Any], env_settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every problem of every campaign in the file, each with its line, column and campaign key."""
    problems: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    for i, raw in enumerate(documents):
        prefix: tuple[int, ...] = (i,) if isinstance(file.value, list) else ()
        key = raw.get("key") if isinstance(raw, dict) else None
        key = key if isinstance(key, int) and not isinstance(key, bool) else None
        found = campaign_problems(raw, settings=env_settings)
        if key is not None and key in seen:
            found.append(Problem(("key",), f"key {key} is also the key of campaign #{seen[key] + 1} in this file"))
        if key is not None:
            seen.setdefault(key, i)
        for problem in found:
            line, column = file.position((*prefix, *problem.path), on_key=problem.on_key)
            problems.append(
                {
                    "file": file.path,
                    "line": line,
                    "column": column,
                    "campaignKey": key,
                    "index": i,
                    "field": where(problem.path),
                    "message": problem.message,
                }
            )
    return problems


def problem_line(problem: dict[str, Any]) -> str:
    """``FILE:LINE:COLUMN: campaign KEY: MESSAGE``, the shape compilers and editors read."""
    which = (
        f"campaign {problem['campaignKey']}"
        if problem["campaignKey"] is not None
        else f"campaign #{problem['index'] + 1}"
    )
    return f"{problem['file']}:{problem['line']}:{problem['column']}: {which}: {problem['message']}"


def cmd_campaign_apply(args: argparse.Namespace, settings: Settings) -> None:
    """Check every campaign of the file, then apply them all in one transaction, or none of them."""
    file = load_located(args.file)
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        env_settings = effective(accounts.environment_settings(conn, db, env_id=env))
    documents = file.value if isinstance(file.value, list) else [file.value]
    problems = _file_problems(file, documents, env_settings)
    if problems:
        n = len(problems)
        raise FileProblems(f"{args.file}: {n} problem{'s' * (n != 1)}; nothing applied", problems)
    warnings = {i: campaigns.check_delivery(db, env_id=env, raw=doc) for i, doc in enumerate(documents)}
    if args.strict and any(warnings.values()):
        _warn([w for ws in warnings.values() for w in ws])
        raise InvalidRequest("--strict: not applied, the environment cannot deliver these campaigns (see warnings)")
    applied = campaigns.apply_campaigns(db, env_id=env, raws=documents)
    results: list[dict[str, Any]] = [
        {
            "key": campaign.key,
            "name": campaign.name,
            "status": campaign.status,
            "created": created,
            "warnings": warnings[i],
        }
        for i, (campaign, created) in enumerate(applied)
    ]
    _warn([w for r in results for w in r["warnings"]])
    emit(
        args,
        results,
        "\n".join(
            f"{'created' if r['created'] else 'updated'} campaign {r['key']} ({r['name']}, {r['status']})"
            for r in results
        ),
    )


def cmd_campaign_list(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        listed = [views.campaign(row) for row in campaigns.list_campaigns(conn, db, env_id=env)]
    if not args.all:
        listed = [c for c in listed if c["status"] != "ARCHIVED"]
    lines = [
        "\t".join(
            (str(c["key"]), c["status"], _channel(c), c["purpose"], str(c["provider"]), c["name"]),
        )
        for c in listed
    ]
    emit(
        args,
        listed,
        "\n".join(["KEY\tSTATUS\tCHANNEL\tPURPOSE\tPROVIDER\tNAME", *lines]) if lines else "(no campaigns)",
    )


def _channel(campaign: dict[str, Any]) -> str:
    """``push``, ``kakao/alimtalk``, ``kakao/brand`` or ``sms``."""
    channel = str(campaign.get("channel", "push"))
    return f"{channel}/{campaign['type']}" if campaign.get("type") else channel


def cmd_campaign_show(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        emit(args, views.campaign(campaigns.get_campaign(conn, db, env_id=env, key=args.key)))


def cmd_campaign_archive(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    campaign = campaigns.archive_campaign(db, env_id=env_id(db, args.env), key=args.key)
    emit(args, campaign.to_json(), f"archived campaign {campaign.key} ({campaign.name}): it no longer sends")


def cmd_cohort_set(args: argparse.Namespace, settings: Settings) -> None:
    members = read_lines(args.file)
    db = open_db(settings)
    size = campaigns.set_cohort(db, env_id=env_id(db, args.env), name=args.name, members=members)
    emit(args, {"name": args.name, "size": size}, f"cohort {args.name}: {size} members")


def cmd_cohort_list(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        listed = views.rows(campaigns.list_cohorts(conn, db, env_id=env))
    emit(args, listed, "\n".join(f"{c['name']}\t{c['size']}" for c in listed) or "(no cohorts)")


def cmd_cohort_show(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        view = views.row(campaigns.cohort_view(conn, db, env_id=env, name=args.name, limit=args.limit))
    more = view["size"] - len(view["members"])
    text = f"cohort {view['name']}: {view['size']} members\n" + "\n".join(view["members"])
    emit(args, view, text + (f"\n… and {more} more" if more > 0 else ""))


def cmd_token_add(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.store.crypto import Cipher
    from magpie.store.writer import GroupCommitWriter

    db = open_db(settings)
    env = env_id(db, args.env)
    writer = GroupCommitWriter(db=db, secret=Cipher.load(secret_key=settings.secret_key, data_dir=settings.data_dir))
    writer.start()
    try:
        status = writer.run_sync(
            tokens.RegisterToken(
                key_hash=None,
                env_id=env,
                device_id=args.device_id,
                user_id=args.user_id,
                provider_type={"fcm": "FCM", "apns": "APN"}[args.provider],  # as the API and SDKs name them
                token=args.token,
            )
        )
    finally:
        writer.stop()
    emit(
        args,
        {"deviceId": args.device_id, "userId": args.user_id, "providerType": args.provider, "status": status},
        f"token for device {args.device_id}: {status}",
    )


def _token_lines(listed: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{t['deviceId']}\t{t['userId'] or '-'}\t{t['providerType']}\t{t['token']}\t{t['status']}"
        + (f" ({t['retiredReason']})" if t["retiredReason"] else "")
        for t in listed
    )


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        listed = tokens.list_push_tokens(conn, db, env_id=env, user_id=args.user_id, limit=args.limit)
    emit(args, listed, _token_lines(listed) or "(no push tokens)")


def cmd_token_show(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        listed = tokens.list_push_tokens(conn, db, env_id=env, device_id=args.device_id)
    if not listed:
        raise NotFound(f"no push token for device '{args.device_id}' in {args.env}")
    emit(args, listed, _token_lines(listed))


def _shown_settings(env: accounts.Environment) -> dict[str, Any]:
    # Provider credentials are write-only: name the configured providers (redacted, like every answer).
    return {**DEFAULTS, **redact_settings(env.settings), "providers": sorted(env.settings.get("providers", {}))}


def _settings_text(env: accounts.Environment) -> str:
    shown = _shown_settings(env)
    lines = [f"environment {env.name} (time zone {env.timezone})"]
    lines += [f"  {name}: {value}" for name, value in sorted(shown.items()) if name != "providers"]
    lines.append(f"  providers: {', '.join(shown['providers']) or '(none: only the sandbox delivers)'}")
    return "\n".join(lines)


def cmd_settings_set(args: argparse.Namespace, settings: Settings) -> None:
    if not args.file:
        raise UsageError("settings set needs -f FILE (YAML or JSON)")
    stored = accounts.get_environment(open_db(settings), args.env).settings
    parsed = parse_settings(keep_stored_secrets(load_document(args.file), stored))
    env = accounts.update_environment_settings(
        open_db(settings), name=args.env, settings=parsed, timezone=args.timezone
    )
    emit(
        args,
        {"environment": env.name, "timezone": env.timezone, "settings": _shown_settings(env)},
        f"updated settings of {env.name} (time zone {env.timezone})",
    )


def cmd_settings(args: argparse.Namespace, settings: Settings) -> None:
    """``magpie settings -f FILE`` sets; ``magpie settings`` alone shows."""
    if args.file:
        cmd_settings_set(args, settings)
    else:
        cmd_settings_show(args, settings)


def cmd_settings_show(args: argparse.Namespace, settings: Settings) -> None:
    env = accounts.get_environment(open_db(settings), args.env)
    emit(
        args,
        {"environment": env.name, "timezone": env.timezone, "settings": _shown_settings(env)},
        _settings_text(env),
    )


def cmd_settings_list(args: argparse.Namespace, settings: Settings) -> None:
    envs = accounts.list_environments(open_db(settings))
    emit(
        args,
        [{"environment": e.name, "timezone": e.timezone, "settings": _shown_settings(e)} for e in envs],
        "\n".join(_settings_text(e) for e in envs) or "(no environments)",
    )


def cmd_provider_check(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.providers.apns import ApnsProvider
    from magpie.providers.base import ProviderError
    from magpie.providers.fcm import FcmProvider
    from magpie.providers.registry import ProviderRegistry

    env = accounts.get_environment(open_db(settings), args.env)
    configured = sorted(name for name in env.settings.get("providers", {}) if name in ("fcm", "apns"))
    names = [args.provider] if args.provider else configured
    if not names:
        raise UsageError(f"environment {env.name} has no fcm or apns settings to check")

    async def check_all() -> list[dict[str, Any]]:
        async def record(*_: Any) -> int:
            return 0

        channels = ProviderRegistry(record_sandbox=record, timeout=settings.provider_timeout_seconds)
        results = []
        try:
            for name in names:
                try:
                    provider = channels.provider(env_id=env.id, settings=env.settings, name=name)
                    if isinstance(provider, FcmProvider):
                        detail = await provider.check(args.token)
                    elif isinstance(provider, ApnsProvider):
                        detail = await provider.check()
                    else:
                        raise UsageError(f"{name}: no check for this provider")
                    results.append({"provider": name, "ok": True, "detail": detail})
                except ProviderError as exc:
                    results.append({"provider": name, "ok": False, "code": exc.code, "detail": str(exc)})
                except ValueError as exc:
                    results.append({"provider": name, "ok": False, "code": "INVALID_SETTINGS", "detail": str(exc)})
        finally:
            await channels.aclose()
        return results

    results = asyncio.run(check_all())
    emit(
        args,
        results,
        "\n".join(
            f"{r['provider']}: ok: {r['detail']}" if r["ok"] else f"{r['provider']}: FAILED {r['code']}: {r['detail']}"
            for r in results
        ),
    )
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


def _reasons(title: str, counts: dict[str, int]) -> str:
    return "".join(f"\n  {title} {reason}: {n}" for reason, n in sorted(counts.items()))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def cmd_stats_dispatch(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = env_id(db, args.env)
    with db.transaction(write=False) as conn:
        view = views.dispatch(dispatch_view(conn, db, env_id=env, dispatch_id=args.dispatch_id))
    counts = view["counts"]
    unknown = [r for r in view["recipients"] if r["outcome"] == "UNKNOWN"]
    unknown_reasons: dict[str, int] = {}
    for r in unknown:
        unknown_reasons[r["reason"] or "UNKNOWN"] = unknown_reasons.get(r["reason"] or "UNKNOWN", 0) + 1
    text = (
        f"dispatch {view['dispatchId']} ({view['channel']} campaign {view['campaignKey']}): {view['status']}\n"
        f"  requested {view['requested']}  "
        + "  ".join(f"{status.lower()} {counts.get(status, 0)}" for status in STATUS_ORDER)
        + _reasons("failed", view["failures"])
        + _reasons("unknown", unknown_reasons)
        + _reasons("excluded", view["excluded"])
    )
    emit(args, view, text)


def cmd_stats_campaign(args: argparse.Namespace, settings: Settings) -> None:
    from magpie.api.hackle.push import parse_time

    db = open_db(settings)
    env = env_id(db, args.env)
    now = int(time.time() * 1000)
    since = parse_time(args.since, name="--from", default=now - 7 * 86_400_000)
    until = parse_time(args.until, name="--to", default=now + 1)
    with db.transaction(write=False) as conn:
        stats = views.campaign_stats(
            campaign_stats(conn, db, env_id=env, campaign_key=args.key, since=since, until=until)
        )
    clicks = (
        f", clicks {stats['uniqueClicks']} unique / {stats['totalClicks']} total (CTR {_rate(stats['ctr'])})"
        if stats["channel"] == "push"
        else ""
    )
    text = (
        f"{stats['channel']} campaign {args.key}: requested {stats['requested']} in {stats['dispatches']} dispatches, "
        f"sent {stats['sent']}, failed {stats['failed']}, unknown {stats['unknown']}, "
        f"excluded {stats['excludedTotal']}, pending {stats['pending']} (sent rate {_rate(stats['sentRate'])})"
        + clicks
        + _reasons("failed", stats["failures"])
        + _reasons("excluded", stats["excluded"])
    )
    report = experiments.experiment_report(db, env_id=env, key=args.key)
    if report is not None:
        if args.csv:
            sys.stdout.write(conversions.report_csv(report))
            return
        stats["experiment"] = report
        text += "\n" + experiments.experiment_text(report)
    emit(args, stats, text)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    campaign = sub.add_parser("campaign", parents=[common], help="campaigns (push, Kakao and SMS)").add_subparsers(
        dest="campaign_cmd", required=True
    )
    apply = campaign.add_parser("apply", parents=[common], help="create or update campaigns from a YAML/JSON file")
    apply.add_argument("-f", "--file", required=True, help="YAML (or .json) file: one campaign or a list; - for stdin")
    add_env(apply)
    apply.add_argument(
        "--strict", action="store_true", help="refuse (exit 1) when the environment cannot deliver the campaign"
    )
    apply.set_defaults(fn=cmd_campaign_apply)
    listing = campaign.add_parser("list", parents=[common], help="list campaigns (without archived ones)")
    add_env(listing)
    listing.add_argument("--all", action="store_true", help="include archived campaigns")
    listing.set_defaults(fn=cmd_campaign_list)
    show = campaign.add_parser("show", parents=[common], help="show one campaign's definition")
    show.add_argument("key", type=int, help="the campaign key")
    add_env(show)
    show.set_defaults(fn=cmd_campaign_show)
    archive = campaign.add_parser("archive", parents=[common], help="archive a campaign: it stops sending")
    archive.add_argument("key", type=int, help="the campaign key")
    add_env(archive)
    archive.set_defaults(fn=cmd_campaign_archive)

    cohort = sub.add_parser("cohort", parents=[common], help="static cohorts").add_subparsers(
        dest="cohort_cmd", required=True
    )
    cs = cohort.add_parser("set", parents=[common], help="replace a cohort with the ids in a file (one per line)")
    cs.add_argument("name", help="cohort name (1-128 characters)")
    cs.add_argument("-f", "--file", required=True, help="text file, one userId or deviceId per line; - for stdin")
    add_env(cs)
    cs.set_defaults(fn=cmd_cohort_set)
    cl = cohort.add_parser("list", parents=[common], help="list cohorts with their sizes")
    add_env(cl)
    cl.set_defaults(fn=cmd_cohort_list)
    cshow = cohort.add_parser("show", parents=[common], help="show a cohort's size and members")
    cshow.add_argument("name", help="cohort name")
    add_env(cshow)
    cshow.add_argument("--limit", type=int, default=1000, metavar="N", help="members to print (default: %(default)s)")
    cshow.set_defaults(fn=cmd_cohort_show)

    token = sub.add_parser("token", parents=[common], help="push tokens").add_subparsers(
        dest="token_cmd", required=True
    )
    ta = token.add_parser("add", parents=[common], help="register a device's push token")
    add_env(ta)
    ta.add_argument("--device-id", required=True, metavar="ID", help="the device the token belongs to")
    ta.add_argument("--user-id", metavar="ID", help="link the device to this user (default: no user)")
    ta.add_argument(
        "--provider",
        type=push_provider,
        choices=("fcm", "apns"),
        required=True,
        metavar="fcm|apns",
        help="FCM (Android) or APNs (iOS), any case",
    )
    ta.add_argument("--token", required=True, help="the device token from FCM or APNs")
    ta.set_defaults(fn=cmd_token_add)
    tl = token.add_parser("list", parents=[common], help="list push tokens, newest first (tokens shortened)")
    add_env(tl)
    tl.add_argument("--user-id", metavar="ID", help="only this user's devices")
    tl.add_argument("--limit", type=int, default=100, metavar="N", help="at most N tokens (default: %(default)s)")
    tl.set_defaults(fn=cmd_token_list)
    tshow = token.add_parser("show", parents=[common], help="show a device's push tokens")
    tshow.add_argument("device_id", metavar="DEVICE_ID", help="the deviceId")
    add_env(tshow)
    tshow.set_defaults(fn=cmd_token_show)

    env_settings = sub.add_parser(
        "settings",
        parents=[common],
        help="an environment's settings: -f FILE sets them, alone shows them",
        description="Per-environment settings (providers, sender name, night policy, caps); see docs/operations.md.",
    )
    env_settings.add_argument("-f", "--file", help="YAML (or .json) settings file to apply; - for stdin")
    add_env(env_settings)
    env_settings.add_argument("--timezone", metavar="TZ", help="also change the IANA time zone (default: unchanged)")
    env_settings.set_defaults(fn=cmd_settings)
    settings_cmds = env_settings.add_subparsers(dest="settings_cmd")
    ss = settings_cmds.add_parser("set", parents=[common], help="replace the settings with a file's")
    ss.add_argument("-f", "--file", required=True, help="YAML (or .json) settings file; - for stdin")
    add_env(ss)
    ss.add_argument(
        "--timezone",
        default=argparse.SUPPRESS,
        metavar="TZ",
        help="also change the IANA time zone (default: unchanged)",
    )
    ss.set_defaults(fn=cmd_settings_set)
    sshow = settings_cmds.add_parser("show", parents=[common], help="show the settings (provider names, no secrets)")
    add_env(sshow)
    sshow.set_defaults(fn=cmd_settings_show)
    settings_cmds.add_parser("list", parents=[common], help="every environment's settings").set_defaults(
        fn=cmd_settings_list
    )

    provider = sub.add_parser("provider", parents=[common], help="push providers").add_subparsers(
        dest="provider_cmd", required=True
    )
    pc = provider.add_parser(
        "check",
        parents=[common],
        help="check the configured FCM/APNs credentials against the provider, notifying no one",
    )
    add_env(pc)
    pc.add_argument(
        "--provider",
        type=push_provider,
        choices=("fcm", "apns"),
        metavar="fcm|apns",
        help="check only this one, any case, APN too (default: every configured one)",
    )
    pc.add_argument("--token", help="FCM: validate a send to this device token (default: a placeholder token)")
    pc.set_defaults(fn=cmd_provider_check)

    stats = sub.add_parser("stats", parents=[common], help="delivery statistics").add_subparsers(
        dest="stats_cmd", required=True
    )
    sd = stats.add_parser("dispatch", parents=[common], help="one dispatch: outcomes, failures and exclusions")
    sd.add_argument("dispatch_id", metavar="DISPATCH_ID", help="the dispatchId a trigger answered")
    add_env(sd)
    sd.set_defaults(fn=cmd_stats_dispatch)
    sc = stats.add_parser("campaign", parents=[common], help="a campaign over a time range")
    sc.add_argument("key", type=int, help="the campaign key")
    add_env(sc)
    sc.add_argument("--from", dest="since", metavar="TIME", help=f"start, inclusive: {TIME_HELP} (default: 7 days ago)")
    sc.add_argument("--to", dest="until", metavar="TIME", help=f"end, exclusive: {TIME_HELP} (default: now)")
    sc.add_argument("--csv", action="store_true", help="the experiment's figures per version and arm as CSV")
    sc.set_defaults(fn=cmd_stats_campaign)
