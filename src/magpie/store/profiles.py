"""Writer jobs for the profile endpoints, and the identity rules they share.

Each job is built on the event loop from a validated request and run by the group-commit
writer inside its batch transaction. ``profile_keys`` lets the writer load and lock every
profile of a batch in one ordered query.
"""

from __future__ import annotations

from typing import Any

import msgspec

from magpie.api.bodies import parse_properties
from magpie.domain import consent
from magpie.domain.identity import DEVICE, USER, merge_anonymous, merge_crm
from magpie.domain.operations import Operation, apply_operations
from magpie.domain.phone import mask
from magpie.errors import InvalidApiKey, NotFound
from magpie.store.crypto import Cipher
from magpie.store.db import Database
from magpie.store.transaction import ProfileRow, Tx

_decode = msgspec.json.decode


def _keys(env_id: int, user_id: str | None, device_id: str | None) -> tuple[tuple[int, str, str], ...]:
    keys: list[tuple[int, str, str]] = []
    if user_id is not None:
        keys.append((env_id, USER, user_id))
    if device_id is not None:
        keys.append((env_id, DEVICE, device_id))
    return tuple(keys)


def link_device(tx: Tx, *, user: ProfileRow, device_id: str) -> None:
    """Link a device to a user; the first link merges the anonymous device profile in."""
    device = tx.profile(user.env_id, DEVICE, device_id)
    if device.linked_user == user.ident:
        return
    if device.linked_user is None and (device.properties or device.crm):
        tx.update(
            user,
            properties=merge_anonymous(user_properties=user.properties, device_properties=device.properties),
            crm=merge_crm(user_crm=user.crm, device_crm=device.crm),
        )
    tx.update(device, linked_user=user.ident)


def resolve(tx: Tx, *, env_id: int, user_id: str | None, device_id: str | None) -> ProfileRow:
    """The profile a request acts on: the user, else the device's linked user, else the device."""
    if user_id is not None:
        user = tx.profile(env_id, USER, user_id)
        if device_id is not None:
            link_device(tx, user=user, device_id=device_id)
        return user
    assert device_id is not None
    device = tx.profile(env_id, DEVICE, device_id)
    if device.linked_user is not None:
        return tx.profile(env_id, USER, device.linked_user)
    return device


def _check_key(tx: Tx, key_hash: str, env_id: int, revoked: object = None) -> None:
    """Re-check a cached key inside the transaction; the writer drops a revoked key from caches."""
    del revoked  # kept for callers written before the writer took over cache invalidation
    if tx.key_env(key_hash) != env_id:
        raise InvalidApiKey()


class ProfileJob:
    """Base for jobs acting on one resolved profile."""

    __slots__ = ("device_id", "env_id", "key_hash", "profile_keys", "user_id")

    def __init__(
        self,
        *,
        key_hash: str,
        env_id: int,
        user_id: str | None,
        device_id: str | None,
    ) -> None:
        self.key_hash = key_hash
        self.env_id = env_id
        self.user_id = user_id
        self.device_id = device_id
        self.profile_keys = _keys(env_id, user_id, device_id)

    def run(self, tx: Tx) -> Any:
        _check_key(tx, self.key_hash, self.env_id)
        target = resolve(tx, env_id=self.env_id, user_id=self.user_id, device_id=self.device_id)
        return self.apply(tx, target)

    def apply(self, tx: Tx, target: ProfileRow) -> Any:
        raise NotImplementedError


class UpdateProperties(ProfileJob):
    __slots__ = ("operations",)

    def __init__(self, *, operations: list[Operation], **kw: Any) -> None:
        super().__init__(**kw)
        self.operations = operations

    def apply(self, tx: Tx, target: ProfileRow) -> None:
        if self.operations:
            tx.update(target, properties=apply_operations(properties=target.properties, operations=self.operations))


class UpdatePropertiesRequest(UpdateProperties):
    """``POST /v1/properties`` from its raw body: decoded and validated in ``prepare``, by the writer."""

    __slots__ = ("body",)

    def __init__(self, *, key_hash: str, env_id: int, body: bytes) -> None:
        # Built once per request on the event loop: set the fields directly, no __init__ chain.
        self.key_hash = key_hash
        self.env_id = env_id
        self.user_id: str | None = None
        self.device_id: str | None = None
        self.operations: list[Operation] = []
        self.body: bytes | None = body
        self.profile_keys: tuple[tuple[int, str, str], ...] = ()

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Crossing to the writer process: three fields, not the whole slot state.
        if self.body is None:
            return object.__reduce_ex__(self, 2)
        return (_rebuild_request, (self.key_hash, self.env_id, self.body))

    def prepare(self) -> None:
        """Decode and validate; a ``MagpieError`` here fails this request alone, before any read."""
        if self.body is not None:
            self.user_id, self.device_id, self.operations = parse_properties(self.body)
            self.profile_keys = _keys(self.env_id, self.user_id, self.device_id)
            self.body = None


def _rebuild_request(key_hash: str, env_id: int, body: bytes) -> UpdatePropertiesRequest:
    return UpdatePropertiesRequest(key_hash=key_hash, env_id=env_id, body=body)


class SetConsent(ProfileJob):
    __slots__ = ("changes", "channel")

    def __init__(self, *, channel: str, changes: dict[str, str], **kw: Any) -> None:
        super().__init__(**kw)
        self.channel = channel
        self.changes = changes

    def apply(self, tx: Tx, target: ProfileRow) -> None:
        if self.changes:
            tx.update(
                target,
                crm=consent.apply_consent(crm=target.crm, channel=self.channel, changes=self.changes, now_ms=tx.now_ms),
            )


class SetPhone(ProfileJob):
    """Set (``phone`` given) or delete (``phone`` None) a user's phone number."""

    __slots__ = ("phone",)

    def __init__(self, *, phone: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.phone = phone

    def apply(self, tx: Tx, target: ProfileRow) -> None:
        # The blind index lets a gateway's 080 opt-out (which names a number) find its user.
        tx.execute("DELETE FROM phone_index WHERE env_id = ? AND user_id = ?", (target.env_id, target.ident))
        if self.phone is None:
            if target.phone_enc is not None:
                tx.update(target, phone_enc=None)
            return
        tx.update(target, phone_enc=tx.secret.encrypt(self.phone))
        tx.execute(
            "INSERT INTO phone_index (env_id, phone_hmac, user_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (target.env_id, tx.secret.blind_index(self.phone), target.ident),
        )


class UnsubscribeUsers:
    """A gateway's 080 opt-out: these users' SMS marketing consent becomes UNSUBSCRIBED.

    Authenticated by the webhook's secret, not an API key; the users were found by the blind
    index of the number that called.
    """

    __slots__ = ("env_id", "profile_keys", "user_ids")

    def __init__(self, *, env_id: int, user_ids: list[str]) -> None:
        self.env_id = env_id
        self.user_ids = user_ids
        self.profile_keys = tuple((env_id, USER, u) for u in user_ids)

    def run(self, tx: Tx) -> int:
        changed = 0
        for user_id in self.user_ids:
            target = tx.profile(self.env_id, USER, user_id)
            if not target.exists or consent.status_of(target.crm, "sms", "marketing") == consent.UNSUBSCRIBED:
                continue
            crm = consent.apply_consent(
                crm=target.crm, channel="sms", changes={"marketing": consent.UNSUBSCRIBED}, now_ms=tx.now_ms
            )
            tx.update(target, crm=crm)
            changed += 1
        return changed


# -- reads ---------------------------------------------------------------------------------------------

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


def reconfirmations_due(
    conn: Any, db: Database, *, env_id: int, channels: tuple[str, ...], now_ms: int, within_ms: int, limit: int
) -> list[dict[str, Any]]:
    """Users whose marketing consent per channel is due for the two-year notice, earliest first.

    A scan of the environment's user profiles: a report run now and then, not a request path.
    """
    due: list[dict[str, Any]] = []
    rows = db.fetchall(
        conn,
        "SELECT ident, crm FROM profiles WHERE env_id = ? AND kind = ? AND crm LIKE ?",
        (env_id, USER, '%"marketing"%'),
    )
    for ident, raw in rows:
        crm = _decode(raw)
        for channel in channels:
            when = consent.reconfirmation_due(crm, channel, now_ms=now_ms, within_ms=within_ms)
            if when is not None:
                state = crm[channel]["marketing"]
                due.append({"userId": ident, "channel": channel, "confirmedAt": state.get("updatedAt"), "dueAt": when})
    due.sort(key=lambda d: (d["dueAt"], d["userId"], d["channel"]))
    return due[:limit]
