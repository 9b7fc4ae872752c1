"""Push tokens: registering a device's FCM or APNs token, moving a token between devices, listing them."""

from __future__ import annotations

from typing import Any, NamedTuple

from magpie.domain.identity import DEVICE
from magpie.store.db import Connection, Database
from magpie.store.profiles import link_device
from magpie.store.transaction import Tx
from magpie.store.writer import JobDefaults


class RegisterToken(JobDefaults):
    """Attach a push token to a device (and the device to a user when given)."""

    __slots__ = (
        "device_id",
        "env_id",
        "key_hash",
        "profile_keys",
        "provider_type",
        "token",
        "user_id",
    )

    def __init__(
        self,
        *,
        key_hash: str | None,
        env_id: int,
        device_id: str,
        user_id: str | None,
        provider_type: str,
        token: str,
    ) -> None:
        self.key_hash = key_hash
        self.env_id = env_id
        self.device_id = device_id
        self.user_id = user_id
        self.provider_type = provider_type
        self.token = token
        keys = [(env_id, DEVICE, device_id)]
        if user_id is not None:
            keys.append((env_id, "u", user_id))
        self.profile_keys = tuple(keys)

    def run(self, tx: Tx) -> str:
        """Returns the token's status: ACTIVE, or RETIRED for a token a provider rejected for good."""
        if self.key_hash is not None:
            tx.check_key(self.key_hash, self.env_id)
        device = tx.profile(self.env_id, DEVICE, self.device_id)
        if self.user_id is not None:
            link_device(tx, user=tx.profile(self.env_id, "u", self.user_id), device_id=self.device_id)
        elif not device.exists:
            tx.update(device)
        return register_token_row(
            tx,
            env_id=self.env_id,
            device_id=self.device_id,
            provider_type=self.provider_type,
            token=self.token,
        )


def register_token_row(tx: Tx, *, env_id: int, device_id: str, provider_type: str, token: str) -> str:
    row = tx.fetchone(
        "SELECT device_id, provider_type, status FROM push_tokens WHERE env_id = ? AND token = ?",
        (env_id, token),
    )
    if row is None:
        tx.execute(
            "INSERT INTO push_tokens (env_id, token, device_id, provider_type, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'ACTIVE', ?, ?)",
            (env_id, token, device_id, provider_type, tx.now_ms, tx.now_ms),
        )
        return "ACTIVE"
    stored_device, stored_provider, status = row
    if status == "RETIRED":
        return "RETIRED"  # a provider said this token is dead: it is never used again
    if stored_device != device_id or stored_provider != provider_type:
        # The same token now reported by another device (reinstall, restore): it moves.
        tx.execute(
            "UPDATE push_tokens SET device_id = ?, provider_type = ?, updated_at = ? WHERE env_id = ? AND token = ?",
            (device_id, provider_type, tx.now_ms, env_id, token),
        )
    return "ACTIVE"


class _TokenListRow(NamedTuple):
    device_id: str
    user_id: str | None
    token: str
    provider_type: str
    status: str
    retired_reason: str | None
    updated_at: int


def list_push_tokens(
    conn: Connection,
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
    rows = db.fetchall_as(conn, sql + " ORDER BY t.updated_at DESC, t.token LIMIT ?", (*params, limit), _TokenListRow)
    return [
        {
            "deviceId": r.device_id,
            "userId": r.user_id,
            "token": r.token[:8] + "…" if len(r.token) > 12 else r.token,
            "providerType": r.provider_type,
            "status": r.status,
            "retiredReason": r.retired_reason,
            "updatedAt": r.updated_at,
        }
        for r in rows
    ]
