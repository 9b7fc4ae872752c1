"""Read-side listings for the dashboard: latest dispatches, a user's deliveries, the inbox, audit.

Each query is bounded by an index and a ``LIMIT`` so a page costs the same on a large store.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from magpie.domain.identity import USER
from magpie.domain.phone import mask
from magpie.store.crypto import Cipher
from magpie.store.db import Connection, Database

_decode = msgspec.json.decode
# What a Kakao button opens, in the order a phone would try: the mobile web link first.
_LINKS = ("linkMo", "linkPc", "schemeAndroid", "schemeIos")


class _DispatchRow(NamedTuple):
    id: str
    campaign_key: int | None
    status: str
    requested: int
    created_at: int
    completed_at: int | None
    channel: str


def latest_dispatches(
    conn: Connection,
    db: Database,
    *,
    env_id: int,
    campaign_key: int | None = None,
    channel: str | None = None,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """The newest dispatches (of one campaign or channel, or of the environment) with counts by outcome
    (``UNKNOWN`` included; recipients without an outcome yet are not counted)."""
    columns = "id, campaign_key, status, requested, created_at, completed_at, channel"
    if campaign_key is not None:
        rows = db.fetchall_as(
            conn,
            f"SELECT {columns} FROM dispatches WHERE env_id = ? AND campaign_key = ? ORDER BY created_at DESC LIMIT ?",
            (env_id, campaign_key, limit),
            _DispatchRow,
        )
    elif channel is not None:
        rows = db.fetchall_as(
            conn,
            f"SELECT {columns} FROM dispatches WHERE env_id = ? AND channel = ? ORDER BY created_at DESC LIMIT ?",
            (env_id, channel, limit),
            _DispatchRow,
        )
    else:
        rows = db.fetchall_as(
            conn,
            f"SELECT {columns} FROM dispatches WHERE env_id = ? ORDER BY created_at DESC LIMIT ?",
            (env_id, limit),
            _DispatchRow,
        )
    counts: dict[str, dict[str, int]] = {str(r.id): {} for r in rows}
    if rows:
        marks = ",".join("?" * len(rows))
        for dispatch_id, outcome, n in db.fetchall(
            conn,
            f"SELECT dispatch_id, outcome, COUNT(*) FROM recipients WHERE dispatch_id IN ({marks}) "
            "AND outcome IS NOT NULL GROUP BY dispatch_id, outcome",
            [r.id for r in rows],
        ):
            counts[str(dispatch_id)][str(outcome)] = int(n)
    return [
        {
            "id": r.id,
            "campaignKey": r.campaign_key,
            "status": r.status,
            "requested": r.requested,
            "createdAt": r.created_at,
            "completedAt": r.completed_at,
            "channel": r.channel,
            "counts": counts[str(r.id)],
        }
        for r in rows
    ]


def last_dispatch_at(conn: Connection, db: Database, *, env_id: int, campaign_key: int) -> int | None:
    latest = db.scalar(
        conn, "SELECT MAX(created_at) FROM dispatches WHERE env_id = ? AND campaign_key = ?", (env_id, campaign_key)
    )
    return None if latest is None else int(latest)


class _UserDeliveryRow(NamedTuple):
    id: int
    dispatch_id: str
    campaign_key: int | None
    device_id: str | None
    provider: str
    status: str
    error_code: str | None
    attempts: int
    created_at: int
    outcome: str | None
    reason: str | None
    recipient_idx: int | None
    channel: str
    kind: str | None
    delivered_at: int | None
    report_code: str | None


def user_deliveries(
    conn: Connection, db: Database, *, env_id: int, user_key: str, limit: int = 20
) -> list[dict[str, Any]]:
    """A profile's newest deliveries with the recipient's outcome and the delivery's clicks."""
    rows = db.fetchall_as(
        conn,
        "SELECT d.id, d.dispatch_id, d.campaign_key, d.device_id, d.provider, d.status, d.error_code, d.attempts, "
        "d.created_at, r.outcome, r.reason, d.recipient_idx, d.channel, d.kind, d.delivered_at, d.report_code "
        "FROM deliveries d "
        "LEFT JOIN recipients r ON r.dispatch_id = d.dispatch_id AND r.idx = d.recipient_idx "
        "WHERE d.env_id = ? AND d.user_key = ? ORDER BY d.created_at DESC, d.id DESC LIMIT ?",
        (env_id, user_key, limit),
        _UserDeliveryRow,
    )
    clicks = _clicks(conn, db, env_id=env_id, delivery_ids=[int(r.id) for r in rows])
    return [
        {
            "deliveryId": r.id,
            "dispatchId": r.dispatch_id,
            "campaignKey": r.campaign_key,
            "deviceId": r.device_id,
            "provider": r.provider,
            "status": r.status,
            "errorCode": r.error_code,
            "attempts": r.attempts,
            "createdAt": r.created_at,
            "outcome": r.outcome,
            "reason": r.reason,
            "recipientIdx": r.recipient_idx,
            "channel": r.channel,
            "type": r.kind,
            "delivered": None if r.report_code is None else r.delivered_at is not None,
            "reportCode": r.report_code,
            "clicks": clicks.get(int(r.id), 0),
        }
        for r in rows
    ]


class _OutcomeRow(NamedTuple):
    dispatch_id: str
    idx: int
    outcome: str | None
    reason: str | None
    updated_at: int
    campaign_key: int | None
    channel: str


class _OutcomeDeliveryRow(NamedTuple):
    dispatch_id: str
    recipient_idx: int | None
    id: int
    device_id: str | None
    provider: str
    status: str
    error_code: str | None
    kind: str | None
    delivered_at: int | None
    report_code: str | None


def user_outcomes(
    conn: Connection, db: Database, *, env_id: int, user_id: str, limit: int = 20
) -> list[dict[str, Any]]:
    """A user's newest outcomes as a recipient, every kind (excluded ones have no delivery), each with
    its dispatch's campaign and channel and its deliveries (provider, type, status, report, clicks)."""
    rows = db.fetchall_as(
        conn,
        "SELECT r.dispatch_id, r.idx, r.outcome, r.reason, r.updated_at, d.campaign_key, d.channel "
        "FROM recipients r JOIN dispatches d ON d.id = r.dispatch_id "
        "WHERE r.env_id = ? AND r.user_id = ? ORDER BY r.updated_at DESC, r.dispatch_id, r.idx LIMIT ?",
        (env_id, user_id, limit),
        _OutcomeRow,
    )
    found: list[dict[str, Any]] = [
        {
            "dispatchId": r.dispatch_id,
            "idx": r.idx,
            "outcome": r.outcome,
            "reason": r.reason,
            "at": r.updated_at,
            "campaignKey": r.campaign_key,
            "channel": r.channel,
            "deliveries": [],
        }
        for r in rows
    ]
    if not found:
        return found
    by_key = {(o["dispatchId"], o["idx"]): o for o in found}
    marks = ",".join("?" * len(by_key))
    deliveries = db.fetchall_as(
        conn,
        "SELECT dispatch_id, recipient_idx, id, device_id, provider, status, error_code, kind, delivered_at, "
        f"report_code FROM deliveries WHERE dispatch_id IN ({marks}) ORDER BY id",
        list({o["dispatchId"] for o in found}),
        _OutcomeDeliveryRow,
    )
    clicks = _clicks(conn, db, env_id=env_id, delivery_ids=[int(d.id) for d in deliveries])
    for d in deliveries:
        owner = by_key.get((d.dispatch_id, d.recipient_idx))
        if owner is not None:
            owner["deliveries"].append(
                {
                    "deliveryId": d.id,
                    "deviceId": d.device_id,
                    "provider": d.provider,
                    "status": d.status,
                    "errorCode": d.error_code,
                    "type": d.kind,
                    "delivered": None if d.report_code is None else d.delivered_at is not None,
                    "reportCode": d.report_code,
                    "clicks": clicks.get(int(d.id), 0),
                }
            )
    return found


def _clicks(conn: Connection, db: Database, *, env_id: int, delivery_ids: list[int]) -> dict[int, int]:
    if not delivery_ids:
        return {}
    marks = ",".join("?" * len(delivery_ids))
    rows = db.fetchall(
        conn,
        f"SELECT delivery_id, COUNT(*) FROM push_clicks WHERE env_id = ? AND delivery_id IN ({marks}) "
        "AND attributed = 1 GROUP BY delivery_id",
        (env_id, *delivery_ids),
    )
    return {int(delivery_id): int(n) for delivery_id, n in rows}


def held_until(conn: Connection, db: Database, *, dispatch_id: str) -> dict[int, int]:
    """Recipients of a dispatch held for the end of night time: recipient index to release time (epoch ms)."""
    rows = db.fetchall(
        conn,
        "SELECT payload, available_at FROM work_items WHERE dispatch_id = ? AND done = 0",
        (dispatch_id,),
    )
    held: dict[int, int] = {}
    for payload, available_at in rows:
        for idx in _decode(payload).get("held", []):
            held[int(idx)] = int(available_at)
    return held


def masked_phones(
    conn: Connection, db: Database, cipher: Cipher, *, env_id: int, user_ids: list[str]
) -> dict[str, str]:
    """The masked phone numbers on file of some users (a page's worth), by user id."""
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    marks = ",".join("?" * len(wanted))
    rows = db.fetchall(
        conn,
        f"SELECT ident, phone_enc FROM profiles WHERE env_id = ? AND kind = ? AND ident IN ({marks}) "
        "AND phone_enc IS NOT NULL",
        (env_id, USER, *wanted),
    )
    return {str(ident): mask(cipher.decrypt(bytes(blob))) for ident, blob in rows}


def click_attribution(conn: Connection, db: Database, *, env_id: int, insert_ids: list[str]) -> dict[str, bool]:
    """For stored ``$push_click`` events: whether each was attributed to a delivery."""
    if not insert_ids:
        return {}
    marks = ",".join("?" * len(insert_ids))
    rows = db.fetchall(
        conn,
        f"SELECT insert_id, attributed FROM push_clicks WHERE env_id = ? AND insert_id IN ({marks})",
        (env_id, *insert_ids),
    )
    return {str(insert_id): bool(attributed) for insert_id, attributed in rows}


class _InboxRow(NamedTuple):
    id: int
    delivery_id: int | None
    payload: str | bytes
    created_at: int
    user_key: str | None
    device_id: str | None
    campaign_key: int | None


def inbox(
    conn: Connection, db: Database, *, env_id: int, user_key: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Sandbox messages (push, Kakao, text), newest first, optionally of one profile (``u:<id>`` or ``d:<id>``).

    Each entry has its ``channel``; pushes carry title, body, image and link, Kakao and text messages
    their type, text, byte count, buttons, fallback, purpose and masked number.
    """
    columns = "i.id, i.delivery_id, i.payload, i.created_at, d.user_key, d.device_id, d.campaign_key"
    if user_key is None:
        rows = db.fetchall_as(
            conn,
            f"SELECT {columns} FROM inbox i LEFT JOIN deliveries d ON d.id = i.delivery_id WHERE i.env_id = ? "
            "ORDER BY i.id DESC LIMIT ?",
            (env_id, limit),
            _InboxRow,
        )
    else:  # from the profile's deliveries (an index) to their inbox rows (another)
        rows = db.fetchall_as(
            conn,
            f"SELECT {columns} FROM deliveries d JOIN inbox i ON i.env_id = d.env_id AND i.delivery_id = d.id "
            "WHERE d.env_id = ? AND d.user_key = ? ORDER BY i.id DESC LIMIT ?",
            (env_id, user_key, limit),
            _InboxRow,
        )
    result = []
    for r in rows:
        message = _decode(r.payload)
        kind, _, ident = (r.user_key or ":").partition(":")
        entry: dict[str, Any] = {
            "id": r.id,
            "deliveryId": r.delivery_id,
            "createdAt": r.created_at,
            "userId": ident if kind == "u" else None,
            "deviceId": r.device_id,
            "campaignKey": r.campaign_key,
        }
        entry.update(_phone_message(message) if "channel" in message else _push_message(message))
        result.append(entry)
    return result


def _push_message(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "channel": "push",
        "title": message.get("title", ""),
        "body": message.get("body", ""),
        "imageUrl": message.get("image_url"),
        "link": message.get("link"),
    }


def _phone_message(message: dict[str, Any]) -> dict[str, Any]:
    """A Kakao or text message as the sandbox gateway recorded it: the number is already masked."""
    fallback = message.get("fallback")
    return {
        "channel": message["channel"],
        "type": message.get("type", ""),
        "text": message.get("text", ""),
        "title": message.get("title"),
        "bytes": message.get("bytes", 0),
        "templateCode": message.get("templateCode"),
        "buttons": [
            {
                "type": b.get("type", ""),
                "name": b.get("name", ""),
                "link": next((b[k] for k in _LINKS if b.get(k)), None),
            }
            for b in message.get("buttons") or []
        ],
        "imageUrls": list(message.get("imageUrls") or []),
        "fallback": (
            {"type": fallback.get("kind", ""), "text": fallback.get("text", ""), "title": fallback.get("title")}
            if isinstance(fallback, dict)
            else None
        ),
        "marketing": bool(message.get("marketing")),
        "to": message.get("to", ""),
    }


def work_status(conn: Connection, db: Database, *, env_id: int, now_ms: int) -> dict[str, int]:
    """Open work items: retrying (attempted before) and held for night time."""
    rows = db.fetchall(
        conn,
        "SELECT attempts, payload, available_at FROM work_items WHERE done = 0 AND env_id = ? LIMIT 10000",
        (env_id,),
    )
    retrying = sum(1 for attempts, _, _ in rows if attempts and attempts > 0)
    held = sum(len(_decode(payload).get("held", [])) for _, payload, at in rows if at > now_ms and "held" in payload)
    return {"open": len(rows), "retrying": retrying, "held": held}


def audit(conn: Connection, db: Database, *, env_id: int, target: str, limit: int = 10) -> list[dict[str, Any]]:
    rows = db.fetchall(
        conn,
        "SELECT at, actor, action FROM audit_log WHERE env_id = ? AND target = ? ORDER BY at DESC, id DESC LIMIT ?",
        (env_id, target, limit),
    )
    return [{"at": at, "actor": actor, "action": action} for at, actor, action in rows]
