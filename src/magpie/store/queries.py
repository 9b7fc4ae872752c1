"""Read-side queries for the admin API, the CLI and the dashboard."""

from __future__ import annotations

from typing import Any

import msgspec

from magpie.domain.identity import DEVICE, USER
from magpie.domain.phone import mask
from magpie.errors import NotFound
from magpie.store.crypto import Cipher
from magpie.store.db import Database

_decode = msgspec.json.decode
_PROFILE = "properties, crm, phone_enc, linked_user, created_at, updated_at"


def _consents(crm: dict[str, Any]) -> dict[str, Any]:
    return {channel: purposes for channel, purposes in crm.items() if channel in ("push", "sms", "kakao")}


def _tokens(conn: Any, db: Database, env_id: int, device_id: str) -> list[dict[str, Any]]:
    rows = db.fetchall(
        conn,
        "SELECT token, provider_type, status, retired_reason, created_at, updated_at FROM push_tokens "
        "WHERE env_id = ? AND device_id = ? ORDER BY created_at",
        (env_id, device_id),
    )
    return [
        {
            "token": r[0][:8] + "…" if len(r[0]) > 12 else r[0],
            "providerType": r[1],
            "status": r[2],
            "retiredReason": r[3],
            "createdAt": r[4],
            "updatedAt": r[5],
        }
        for r in rows
    ]


def user_view(conn: Any, db: Database, cipher: Cipher, *, env_id: int, user_id: str) -> dict[str, Any]:
    """Everything magpie knows about a user: properties, consents, masked phone, devices."""
    row = db.fetchone(
        conn,
        f"SELECT {_PROFILE} FROM profiles WHERE env_id = ? AND kind = ? AND ident = ?",
        (env_id, USER, user_id),
    )
    devices = db.fetchall(
        conn,
        f"SELECT ident, {_PROFILE} FROM profiles WHERE env_id = ? AND kind = ? AND linked_user = ? ORDER BY ident",
        (env_id, DEVICE, user_id),
    )
    if row is None and not devices:
        raise NotFound(f"no user '{user_id}' in this environment")
    properties: dict[str, Any] = {}
    crm: dict[str, Any] = {}
    phone = None
    created = updated = None
    if row is not None:
        properties, crm = _decode(row[0]), _decode(row[1])
        phone = mask(cipher.decrypt(bytes(row[2]))) if row[2] is not None else None
        created, updated = row[4], row[5]
    return {
        "userId": user_id,
        "properties": properties,
        "consents": _consents(crm),
        "phoneNumber": phone,
        "devices": [
            {
                "deviceId": d[0],
                "anonymousProperties": _decode(d[1]),
                "linkedSince": d[6],
                "pushTokens": _tokens(conn, db, env_id, d[0]),
            }
            for d in devices
        ],
        "createdAt": created,
        "updatedAt": updated,
    }


def device_view(conn: Any, db: Database, cipher: Cipher, *, env_id: int, device_id: str) -> dict[str, Any]:
    """A device: its linked user (shown whole) or its anonymous profile."""
    row = db.fetchone(
        conn,
        f"SELECT {_PROFILE} FROM profiles WHERE env_id = ? AND kind = ? AND ident = ?",
        (env_id, DEVICE, device_id),
    )
    if row is None:
        raise NotFound(f"no device '{device_id}' in this environment")
    view: dict[str, Any] = {
        "deviceId": device_id,
        "linkedUserId": row[3],
        "properties": _decode(row[0]),
        "consents": _consents(_decode(row[1])),
        "pushTokens": _tokens(conn, db, env_id, device_id),
        "createdAt": row[4],
        "updatedAt": row[5],
    }
    if row[3] is not None:
        view["user"] = user_view(conn, db, cipher, env_id=env_id, user_id=row[3])
    return view


def env_id_by_name(conn: Any, db: Database, name: str) -> int:
    row = db.fetchone(conn, "SELECT id FROM environments WHERE name = ?", (name,))
    if row is None:
        raise NotFound(f"no environment named '{name}'")
    return int(row[0])


def recent_events(
    conn: Any,
    db: Database,
    *,
    env_id: int,
    user_id: str | None,
    device_id: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Stored events of a user (else of a device), newest first, with their property snapshots."""
    from magpie.store.events import list_events

    kind, ident = (USER, user_id) if user_id is not None else (DEVICE, device_id)
    if ident is None:
        return []
    events: list[dict[str, Any]] = list_events(conn, db, env_id=env_id, kind=kind, ident=ident, limit=limit)["events"]
    return events


def list_push_tokens(
    conn: Any,
    db: Database,
    *,
    env_id: int,
    user_id: str | None = None,
    device_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Push tokens of an environment (or of one user's devices), newest first, tokens shortened."""
    sql = (
        "SELECT t.device_id, p.linked_user, t.token, t.provider_type, t.status, t.retired_reason, t.updated_at "
        "FROM push_tokens t LEFT JOIN profiles p ON p.env_id = t.env_id AND p.kind = ? AND p.ident = t.device_id "
        "WHERE t.env_id = ?"
    )
    params: list[Any] = [DEVICE, env_id]
    if user_id is not None:
        sql += " AND p.linked_user = ?"
        params.append(user_id)
    if device_id is not None:
        sql += " AND t.device_id = ?"
        params.append(device_id)
    rows = db.fetchall(conn, sql + " ORDER BY t.updated_at DESC, t.token LIMIT ?", (*params, limit))
    return [
        {
            "deviceId": r[0],
            "userId": r[1],
            "token": r[2][:8] + "…" if len(r[2]) > 12 else r[2],
            "providerType": r[3],
            "status": r[4],
            "retiredReason": r[5],
            "updatedAt": r[6],
        }
        for r in rows
    ]
