"""``magpie gateways``: which gateway each channel goes through, how it answered, and paid-message use."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from magpie.api.admin.admin_reports import days_from_query, gateway_json
from magpie.cli._common import add_env, emit, open_db
from magpie.config import Settings
from magpie.store import accounts
from magpie.store.gateways import Answer, GatewayReport, gateway_report


def _answer(found: Answer | None, zone: ZoneInfo) -> str:
    if found is None:
        return "none"
    if not found.exact:
        hour = datetime.fromtimestamp(found.at / 1000, zone).strftime("%Y-%m-%d %H:00")
        return f"in the hour from {hour}{' (' + found.code + ')' if found.code else ''}"
    at = datetime.fromtimestamp(found.at / 1000, zone).strftime("%Y-%m-%d %H:%M:%S")
    return f"{at} ({found.provider}{', ' + found.code if found.code else ''})"


def _codes(found: dict[str, int]) -> str:
    return " (" + ", ".join(f"{code} {n}" for code, n in sorted(found.items())) + ")" if found else ""


def describe(report: GatewayReport, *, env: str) -> str:
    zone = ZoneInfo(report.timezone)
    lines = [f"gateways of {env}, {report.days[0].day} to {report.days[-1].day} ({report.timezone})"]
    for c in report.channels:
        configured = ", ".join(
            g.name + "".join(f" {k}={v}" for k, v in sorted(g.details.items())) for g in c.configured
        )
        lines.append(f"{c.channel:<6} {configured}")
        lines.append(f"       last success {_answer(c.last_success, zone)}")
        lines.append(f"       last error   {_answer(c.last_error, zone)}")
        figures = f"       sent {c.sent}  failed {c.failed_total}{_codes(c.failed)}"
        if c.channel != "push":
            figures += (
                f"  unknown {c.unknown_total}{_codes(c.unknown)}  delivered {c.delivered}"
                f"  undelivered {c.undelivered_total}{_codes(c.undelivered)}  no report yet {c.awaiting_report}"
            )
        lines.append(figures)
    limit = f" of {report.paid_limit} allowed" if report.paid_limit else " (no daily limit)"
    lines.append(f"paid messages today ({report.today}): {report.paid_today}{limit}")
    by_type = report.sent_by_type
    lines.append("sent by type: " + (", ".join(f"{k} {n}" for k, n in sorted(by_type.items())) or "none"))
    return "\n".join(lines)


def cmd_gateways(args: argparse.Namespace, settings: Settings) -> None:
    db = open_db(settings)
    env = accounts.get_environment(db, args.env)
    now = int(time.time() * 1000)
    query = {"from": args.from_day or "", "to": args.to_day or ""}
    since, until = days_from_query(query, timezone=env.timezone, now_ms=now)
    with db.transaction(write=False) as conn:
        report = gateway_report(
            conn,
            db,
            env_id=env.id,
            settings=env.settings,
            timezone=env.timezone,
            since=since,
            until=until,
            now_ms=now,
        )
    emit(args, gateway_json(report), describe(report, env=env.name))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "gateways",
        parents=[common],
        help="gateway health per channel, paid-message use against the daily limit, sends by type",
    )
    add_env(parser)
    parser.add_argument("--from", dest="from_day", metavar="YYYY-MM-DD", help="first local day (with --to)")
    parser.add_argument(
        "--to", dest="to_day", metavar="YYYY-MM-DD", help="last local day, included (default: the last 7 days)"
    )
    parser.set_defaults(fn=cmd_gateways)
