"""Korean marketing-message rules (정보통신망법 §50) and frequency caps. No I/O.

>>> marketing_title("봄 세일", sender="magpie shop")
'(광고) magpie shop 봄 세일'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from magpie.domain import consent

AD_PREFIX: Final = "(광고)"
MARKETING: Final = "MARKETING"
INFORMATION: Final = "INFORMATION"
SUBSCRIBED_ONLY: Final = "SUBSCRIBED_ONLY"
SUBSCRIBED_OR_UNKNOWN: Final = "SUBSCRIBED_OR_UNKNOWN"


def marketing_title(title: str, *, sender: str) -> str:
    """Prefix ``(광고)`` and the sender's name, unless the title already carries them."""
    if title.lstrip().startswith(AD_PREFIX):
        return title
    parts = [AD_PREFIX]
    if sender and sender not in title:
        parts.append(sender)
    parts.append(title)
    return " ".join(parts)


def marketing_body(body: str, *, opt_out: str) -> str:
    """Append the opt-out instructions unless the body already has them."""
    if not opt_out or opt_out in body:
        return body
    return f"{body}\n{opt_out}" if body else opt_out


def consent_allows(*, crm: Mapping[str, Any], purpose: str, rule: str, channel: str = "push") -> bool:
    """Marketing needs consent per the campaign's rule; information is blocked only by an opt-out."""
    if purpose == MARKETING:
        status = consent.status_of(crm, channel, "marketing")
        if rule == SUBSCRIBED_ONLY:
            return status == consent.SUBSCRIBED
        return status != consent.UNSUBSCRIBED
    return consent.status_of(crm, channel, "information") != consent.UNSUBSCRIBED


def has_night_consent(crm: Mapping[str, Any]) -> bool:
    return consent.status_of(crm, "push", "night") == consent.SUBSCRIBED


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def night_release(*, now_ms: int, timezone: str, start: str = "21:00", end: str = "08:00") -> int | None:
    """If ``now`` is inside the night window, the epoch ms when it ends; else ``None``."""
    zone = ZoneInfo(timezone)
    now = datetime.fromtimestamp(now_ms / 1000, zone)
    begin, finish = _hhmm(start), _hhmm(end)
    clock = now.time()
    if begin <= finish:
        inside = begin <= clock < finish
    else:  # the window crosses midnight, as 21:00-08:00 does
        inside = clock >= begin or clock < finish
    if not inside:
        return None
    release_day = now.date() if clock < finish else now.date() + timedelta(days=1)
    release = datetime.combine(release_day, finish, zone)
    return int(release.timestamp() * 1000)


def cap_exceeded(
    *,
    caps: Iterable[Mapping[str, Any]],
    campaign_tags: Iterable[str],
    sends: Iterable[tuple[int, Iterable[str]] | tuple[int, Iterable[str], str]],
    now_ms: int,
    channel: str = "push",
) -> bool:
    """Whether one more marketing message on ``channel`` would break a cap.

    ``sends`` are the user's earlier marketing messages as ``(sent_at_ms, tags[, channel])``
    (push when the channel is left out). A cap without a tag counts every message; a cap with
    a tag counts messages carrying that tag and applies only to campaigns carrying it. A cap
    without a channel counts every channel together; one with a channel counts and applies to
    that channel only.
    """
    tags = set(campaign_tags)
    history = [(s[0], set(s[1]), s[2] if len(s) > 2 else "push") for s in sends]
    for cap in caps:
        tag = cap.get("tag")
        cap_channel = cap.get("channel")
        if tag is not None and tag not in tags:
            continue
        if cap_channel is not None and cap_channel != channel:
            continue
        since = now_ms - int(float(cap["windowHours"]) * 3_600_000)
        used = sum(
            1
            for at, sent_tags, sent_channel in history
            if at > since and (tag is None or tag in sent_tags) and (cap_channel is None or cap_channel == sent_channel)
        )
        if used >= int(cap["limit"]):
            return True
    return False


def longest_window_ms(caps: Iterable[Mapping[str, Any]]) -> int:
    return max((int(float(c["windowHours"]) * 3_600_000) for c in caps), default=0)
