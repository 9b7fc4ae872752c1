"""What the CSV exports read: a dispatch's recipients one chunk at a time, and a campaign's figures.

A dispatch may have any number of recipients, so they are read in chunks of at most ``CHUNK``
recipients, each chunk its own short read keyed on the recipient's index (keyset pagination:
``idx > last``), and never all at once. Phone numbers leave here masked; push tokens not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import msgspec

from magpie.domain.identity import USER
from magpie.domain.phone import mask
from magpie.errors import InvalidRequest, NotFound
from magpie.store.crypto import Cipher
from magpie.store.db import Connection, Database
from magpie.store.dispatches import RecipientOutcome
from magpie.store.stats import HOUR_MS, Totals

CHUNK = 1000
OUTCOMES = ("SENT", "FAILED", "UNKNOWN", "EXCLUDED", "PENDING")


@dataclass(frozen=True, slots=True)
class DispatchHead:
    dispatch_id: str
    channel: str
    campaign_key: int
    requested: int


@dataclass(frozen=True, slots=True)
class RecipientLine:
    """One line of a dispatch's recipients export: a recipient, or one of its deliveries."""

    idx: int
    user_id: str | None
    device_id: str | None
    outcome: str
    reason: str | None
    channel: str
    kind: str | None  # push, or the Kakao/SMS message type
    provider: str | None
    status: str | None  # the delivery's own status
    error_code: str | None
    report_code: str | None
    delivered: bool | None
    phone: str | None  # masked
    attempts: int | None
    at: int | None  # when the outcome (or the delivery) was last recorded


def dispatch_head(conn: Connection, db: Database, *, env_id: int, dispatch_id: str) -> DispatchHead:
    try:
        uuid.UUID(dispatch_id)
    except ValueError:
        raise NotFound(f"no dispatch {dispatch_id[:64]!r} in this environment") from None
    row = db.fetchone(
        conn,
        "SELECT id, channel, campaign_key, requested FROM dispatches WHERE id = ? AND env_id = ?",
        (dispatch_id, env_id),
    )
    if row is None:
        raise NotFound(f"no dispatch {dispatch_id} in this environment")
    found_id, channel, campaign_key, requested = row
    return DispatchHead(
        dispatch_id=str(found_id), channel=str(channel), campaign_key=int(campaign_key), requested=int(requested)
    )


def check_outcome(outcome: str | None) -> str | None:
    if outcome and outcome not in OUTCOMES:
        raise InvalidRequest(f"outcome is one of {', '.join(OUTCOMES)}")
    return outcome or None


class _DeliveryRow(NamedTuple):
    recipient_idx: int
    provider: str
    status: str
    error_code: str | None
    report_code: str | None
    delivered_at: int | None
    attempts: int
    updated_at: int
    kind: str | None


def recipient_chunk(
    conn: Connection,
    db: Database,
    cipher: Cipher,
    *,
    head: DispatchHead,
    env_id: int,
    after: int,
    outcome: str | None = None,
    limit: int = CHUNK,
) -> tuple[list[RecipientLine], int | None]:
    """The recipients after index ``after`` (at most ``limit``), with their deliveries, and the index
    to continue after (None at the end). Recipients not yet prepared have no row here: see ``unprepared``."""
    where, params = "dispatch_id = ? AND idx > ?", [head.dispatch_id, after]
    if outcome == "PENDING":
        where += " AND outcome IS NULL"
    elif outcome:
        where += " AND outcome = ?"
        params.append(outcome)
    rows = db.fetchall_as(
        conn,
        f"SELECT idx, user_id, device_id, outcome, reason, updated_at FROM recipients WHERE {where} "
        "ORDER BY idx LIMIT ?",
        (*params, limit),
        RecipientOutcome,
    )
    if not rows:
        return [], None
    first, last = min(int(r.idx) for r in rows), max(int(r.idx) for r in rows)  # the chunk's index range
    deliveries: dict[int, list[_DeliveryRow]] = {}
    for d in db.fetchall_as(
        conn,
        "SELECT recipient_idx, provider, status, error_code, report_code, delivered_at, attempts, updated_at, kind "
        "FROM deliveries WHERE dispatch_id = ? AND recipient_idx >= ? AND recipient_idx <= ? "
        "ORDER BY recipient_idx, id",
        (head.dispatch_id, first, last),
        _DeliveryRow,
    ):
        deliveries.setdefault(int(d.recipient_idx), []).append(d)
    phones: dict[str, str] = {}
    if head.channel != "push":
        users = sorted({str(r.user_id) for r in rows if r.user_id is not None})
        if users:
            marks = ", ".join("?" for _ in users)
            for ident, blob in db.fetchall(
                conn,
                f"SELECT ident, phone_enc FROM profiles WHERE env_id = ? AND kind = ? AND ident IN ({marks}) "
                "AND phone_enc IS NOT NULL",
                (env_id, USER, *users),
            ):
                phones[str(ident)] = mask(cipher.decrypt(bytes(blob)))
    lines: list[RecipientLine] = []
    for idx, user_id, device_id, found, reason, updated in rows:
        base: dict[str, Any] = {
            "idx": int(idx),
            "user_id": user_id,
            "device_id": device_id,
            "outcome": found or "PENDING",
            "reason": reason,
            "channel": head.channel,
            "phone": phones.get(str(user_id)) if user_id is not None else None,
        }
        sent = deliveries.get(int(idx))
        if not sent:
            lines.append(
                RecipientLine(
                    **base,
                    kind=None,
                    provider=None,
                    status=None,
                    error_code=None,
                    report_code=None,
                    delivered=None,
                    attempts=None,
                    at=int(updated),
                )
            )
            continue
        for _, provider, status, error_code, report_code, delivered_at, attempts, at, kind in sent:
            lines.append(
                RecipientLine(
                    **base,
                    kind=str(kind) if kind is not None else ("push" if head.channel == "push" else None),
                    provider=provider,
                    status=status,
                    error_code=error_code,
                    report_code=report_code,
                    delivered=None if report_code is None else delivered_at is not None,
                    attempts=int(attempts),
                    at=int(at),
                )
            )
    return lines, (last if len(rows) == limit else None)


def unprepared(conn: Connection, db: Database, *, head: DispatchHead, outcome: str | None) -> Iterator[RecipientLine]:
    """Recipients named in the trigger that no worker has prepared yet (PENDING, without a row).

    Read only when the dispatch has fewer recipient rows than it requested.
    """
    if outcome not in (None, "PENDING"):
        return
    count = db.scalar(conn, "SELECT COUNT(*) FROM recipients WHERE dispatch_id = ?", (head.dispatch_id,))
    if count is not None and int(count) >= head.requested:
        return
    prepared = {
        int(idx)
        for (idx,) in db.fetchall(conn, "SELECT idx FROM recipients WHERE dispatch_id = ?", (head.dispatch_id,))
    }
    stored = db.scalar(conn, "SELECT users FROM dispatches WHERE id = ?", (head.dispatch_id,))
    users: list[dict[str, Any]] = msgspec.json.decode(stored) if stored is not None else []
    for idx, user in enumerate(users):
        if idx not in prepared:
            yield RecipientLine(
                idx=idx,
                user_id=user.get("userId"),
                device_id=user.get("deviceId"),
                outcome="PENDING",
                reason=None,
                channel=head.channel,
                kind=None,
                provider=None,
                status=None,
                error_code=None,
                report_code=None,
                delivered=None,
                phone=None,
                attempts=None,
                at=None,
            )


# -- a campaign's figures ------------------------------------------------------------------------------

FIGURE_COLUMNS = ("requested", "sent", "failed", "unknown", "excluded", "unique_clicks", "clicks")


def figure_rows(
    rows: list[tuple[int, str, int]], *, since: int, until: int, timezone: str, grain: str
) -> list[tuple[str, Totals]]:
    """``stats.series`` rows summed per hour or local day of ``[since, until)``, every slot listed."""
    zone = ZoneInfo(timezone)
    slots: dict[str, Totals] = {}
    hour = since - since % HOUR_MS
    while hour < until:
        slots.setdefault(_slot(hour, zone, grain), Totals())
        hour += HOUR_MS
    for at, metric, n in rows:
        if since - since % HOUR_MS <= at < until:
            slots.setdefault(_slot(at, zone, grain), Totals()).add(metric, n)
    return list(slots.items())


def _slot(ms: int, zone: ZoneInfo, grain: str) -> str:
    moment = datetime.fromtimestamp(ms / 1000, zone)
    return moment.strftime("%Y-%m-%d %H:00") if grain == "hour" else moment.strftime("%Y-%m-%d")
