"""The experiment part of ``magpie stats campaign``: per version, the arms' figures and verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from magpie.store import campaigns, conversions
from magpie.store.db import Database


def experiment_report(db: Database, *, env_id: int, key: int) -> dict[str, Any] | None:
    """The campaign's experiment report, or None when it has no goal, control group or variants."""
    with db.transaction(write=False) as conn:
        campaign = campaigns.CampaignCache().load(conn, db, env_id=env_id, key=key)
        if campaign is None or campaign.experiment is None:
            return None
        return conversions.experiment_report(conn, db, env_id=env_id, campaign=campaign)


def _pct(value: float) -> str:
    return f"{value:.2%}"


def experiment_text(report: Mapping[str, Any]) -> str:
    goal = report["goal"]
    lines = [
        f"experiment version {report['version']}"
        + (f", goal {goal['event']} within {goal['window']}" if goal else ", no goal")
        + f", control group {report['controlGroup']:g}%"
    ]
    if not report["versions"]:
        lines.append("  no recipient yet")
    for version in report["versions"]:
        lines.append(f"  version {version['version']}{' (current)' if version['current'] else ' (earlier)'}:")
        for arm in version["arms"]:
            low, high = arm["interval"]
            line = (
                f"    {arm['name']}: exposed {arm['exposed']}, unique CTR {_pct(arm['uniqueCtr'])}, "
                f"conversions {arm['conversions']} ({_pct(arm['conversionRate'])}, 95% {_pct(low)}-{_pct(high)}), "
                f"revenue {arm['revenue']:g}"
            )
            if "vsControl" in arm:
                c = arm["vsControl"]
                lo, hi = c["alwaysValid"]["interval"]
                uplift = f"{c['difference'] * 100:+.2f} pt (95% {lo * 100:+.2f} to {hi * 100:+.2f})"
                line += f"; uplift vs control {uplift}: {c['verdict']}"
            if "vsFirst" in arm:
                first = next(a["name"] for a in version["arms"] if a["arm"])
                line += f"; vs {first}: {arm['vsFirst']['verdict']}"
            lines.append(line)
    lines.append(
        "  verdicts and uplift intervals are always-valid: they hold however often they are read (docs/experiments.md)"
    )
    return "\n".join(lines)
