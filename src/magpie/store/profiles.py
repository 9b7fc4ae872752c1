"""Writer jobs for the profile endpoints, and the identity rules they share.

Each job is built on the event loop from a validated request and run by the group-commit
writer inside its batch transaction. ``profile_keys`` lets the writer load and lock every
profile of a batch in one ordered query.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import msgspec
from cryptography.exceptions import InvalidTag

from magpie.domain import consent
from magpie.domain.bodies import parse_properties
from magpie.domain.identity import DEVICE, USER, merge_anonymous, merge_crm
from magpie.domain.operations import Operation, apply_operations
from magpie.domain.phone import mask
from magpie.errors import NotFound
from magpie.store.crypto import Cipher
from magpie.store.db import Connection, Database
from magpie.store.transaction import ProfileRow, Tx
from magpie.store.writer import JobDefaults

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


class ProfileJob(JobDefaults):
    """Base for jobs acting on one resolved profile."""

    __slots__ = ("device_id", "env_id", "key_hash", "profile_keys", "user_id")
    key_hash: str  # always acting for an API key

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

    def run(self, tx: Tx) -> None:
        tx.check_key(self.key_hash, self.env_id)
        target = resolve(tx, env_id=self.env_id, user_id=self.user_id, device_id=self.device_id)
        return self.apply(tx, target)

    def apply(self, tx: Tx, target: ProfileRow) -> None:
        raise NotImplementedError


class UpdateProperties(ProfileJob):
    __slots__ = ("operations",)

    def __init__(self, *, operations: list[Operation], **kw: Any) -> None:
        super().__init__(**kw)
        self.operations = operations

    def apply(self, tx: Tx, target: ProfileRow) -> None:
        if self.operations:
            tx.update(target, properties=apply_operations(properties=target.properties, operations=self.operations))


class PropertiesBody:
    """``POST /v1/properties`` as its raw body, decoded and validated by the writer.

    Where the writer runs in its own process, the decoding then stays off the event loop:
    the job crosses the pipe as three fields, and ``prepare`` (a ``MagpieError`` there fails
    this request alone, before the batch reads anything) turns it into ``UpdateProperties``.
    """

    __slots__ = ("_update", "body", "env_id", "key_hash")

    def __init__(self, key_hash: str, env_id: int, body: bytes) -> None:
        self.key_hash = key_hash
        self.env_id = env_id
        self.body = body
        self._update: UpdateProperties | None = None

    def __reduce__(self) -> tuple[type[PropertiesBody], tuple[str, int, bytes]]:
        return (PropertiesBody, (self.key_hash, self.env_id, self.body))

    def prepare(self) -> None:
        user_id, device_id, operations = parse_properties(self.body)
        self._update = UpdateProperties(
            operations=operations, key_hash=self.key_hash, env_id=self.env_id, user_id=user_id, device_id=device_id
        )

    @property
    def profile_keys(self) -> tuple[tuple[int, str, str], ...]:
        return () if self._update is None else self._update.profile_keys

    def run(self, tx: Tx) -> None:
        if self._update is None:
            self.prepare()
        assert self._update is not None
        self._update.run(tx)


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
        set_phone(tx, target, self.phone)


def set_phone(tx: Tx, target: ProfileRow, phone: str | None) -> None:
    """Store (or, with None, delete) a user's number, encrypted, and keep its blind index in step.

    The blind index lets a gateway's 080 opt-out (which names a number) find its user; every path
    that sets a number (the phone-number endpoint, ``$secured_properties`` events) goes through here.
    """
    tx.execute("DELETE FROM phone_index WHERE env_id = ? AND user_id = ?", (target.env_id, target.ident))
    if phone is None:
        if target.phone_enc is not None:
            tx.update(target, phone_enc=None)
        return
    tx.update(target, phone_enc=tx.secret.encrypt(phone))
    tx.execute(
        "INSERT INTO phone_index (env_id, phone_hmac, user_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (target.env_id, tx.secret.blind_index(phone), target.ident),
    )


@dataclass(frozen=True, slots=True)
class ReindexPage:
    """What one page of ``ReindexPhones`` did; ``after`` is where the next page starts (None: done)."""

    after: tuple[int, str] | None
    users: int
    phones: int
    added: int
    removed: int
    unreadable: int = 0  # numbers the data key cannot decrypt (a wrong MAGPIE_SECRET_KEY), left alone


class ReindexPhones(JobDefaults):
    """Rebuild the phone blind index for one page of users, in key order after ``after``.

    Numbers stored before migration ``0005_phone_channels`` have no index row, and a migration
    cannot compute one (the index is keyed by the data key). Each page reads up to ``limit`` user
    profiles (locked, so a number changing meanwhile waits), decrypts their numbers inside the
    writer, and makes the index hold exactly one row per user with a number and none for a user
    without one. A number the data key cannot decrypt is counted and its rows left alone. Nothing
    is logged; running it again changes nothing.
    """

    __slots__ = ("after", "env_id", "limit")

    def __init__(self, *, after: tuple[int, str] | None = None, limit: int = 500, env_id: int | None = None) -> None:
        self.after = after
        self.limit = limit
        self.env_id = env_id  # None: every environment

    def run(self, tx: Tx) -> ReindexPage:
        env_id, ident = self.after if self.after is not None else (-1, "")
        only = "" if self.env_id is None else "AND env_id = ? "
        rows = tx.fetchall(
            "SELECT env_id, ident, phone_enc FROM profiles "
            f"WHERE kind = ? {only}AND (env_id > ? OR (env_id = ? AND ident > ?)) "
            "ORDER BY env_id, ident LIMIT ? FOR UPDATE",
            (USER, *(() if self.env_id is None else (self.env_id,)), env_id, env_id, ident, self.limit),
        )
        wanted: dict[tuple[int, str], str | None] = {}
        unreadable = 0
        for env, user, stored in rows:
            # A job earlier in the same batch may have changed the number without writing it yet.
            cached = tx.profiles.get((int(env), USER, str(user)))
            phone_enc = cached.phone_enc if cached is not None else stored
            if phone_enc is None:
                wanted[(int(env), str(user))] = None
                continue
            try:
                number = tx.secret.decrypt(bytes(phone_enc))
            except (InvalidTag, ValueError):
                unreadable += 1  # not this data key's: leave the user's index rows as they are
                continue
            wanted[(int(env), str(user))] = tx.secret.blind_index(number)
        present: dict[tuple[int, str], set[str]] = {}
        by_env: dict[int, list[str]] = {}
        for env, user in wanted:
            by_env.setdefault(env, []).append(user)
        for env, users in by_env.items():
            marks = ",".join("?" * len(users))
            for user, hashed in tx.fetchall(
                f"SELECT user_id, phone_hmac FROM phone_index WHERE env_id = ? AND user_id IN ({marks})", (env, *users)
            ):
                present.setdefault((env, str(user)), set()).add(str(hashed))
        added = removed = 0
        for (env, user), hashed in wanted.items():
            have = present.get((env, user), set())
            if have == ({hashed} if hashed is not None else set()):
                continue
            if have:
                tx.execute("DELETE FROM phone_index WHERE env_id = ? AND user_id = ?", (env, user))
                removed += len(have)
            if hashed is not None:
                tx.execute(
                    "INSERT INTO phone_index (env_id, phone_hmac, user_id) VALUES (?, ?, ?)", (env, hashed, user)
                )
                added += 1
        last: tuple[int, str] | None = None
        if rows and len(rows) == self.limit:
            *_, (last_env, last_user, _) = rows
            last = (int(last_env), str(last_user))
        phones = sum(1 for h in wanted.values() if h is not None)
        return ReindexPage(
            after=last, users=len(rows), phones=phones, added=added, removed=removed, unreadable=unreadable
        )


class UnsubscribeUsers(JobDefaults):
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


class _ProfileRow(NamedTuple):
    """The columns of ``_PROFILE``, in its order."""

    properties: str | bytes
    crm: str | bytes
    phone_enc: bytes | None
    linked_user: str | None
    created_at: int
    updated_at: int


class _LinkedDeviceRow(NamedTuple):
    """``ident`` and then the columns of ``_PROFILE``."""

    ident: str
    properties: str | bytes
    crm: str | bytes
    phone_enc: bytes | None
    linked_user: str | None
    created_at: int
    updated_at: int


def _consents(crm: dict[str, Any]) -> dict[str, Any]:
    return {channel: purposes for channel, purposes in crm.items() if channel in ("push", "sms", "kakao")}


@dataclass(frozen=True, slots=True)
class TokenRow:
    token: str  # shortened: enough to recognise a token, not enough to send to it
    provider_type: str
    status: str
    retired_reason: str | None
    created_at: int
    updated_at: int


def _tokens(conn: Connection, db: Database, env_id: int, device_id: str) -> list[TokenRow]:
    rows = db.fetchall_as(
        conn,
        "SELECT token, provider_type, status, retired_reason, created_at, updated_at FROM push_tokens "
        "WHERE env_id = ? AND device_id = ? ORDER BY created_at",
        (env_id, device_id),
        TokenRow,
    )
    return [replace(r, token=r.token[:8] + "…" if len(r.token) > 12 else r.token) for r in rows]


@dataclass(frozen=True, slots=True)
class LinkedDevice:
    device_id: str
    anonymous_properties: dict[str, Any]  # what the device had before its first link
    linked_since: int
    push_tokens: list[TokenRow]


@dataclass(frozen=True, slots=True)
class UserView:
    user_id: str
    properties: dict[str, Any]
    consents: dict[str, Any]  # by channel, each purpose with its status and time
    phone_number: str | None  # masked
    devices: list[LinkedDevice]
    created_at: int | None  # None: known only through its devices
    updated_at: int | None


@dataclass(frozen=True, slots=True)
class DeviceView:
    device_id: str
    linked_user_id: str | None
    properties: dict[str, Any]
    consents: dict[str, Any]
    push_tokens: list[TokenRow]
    created_at: int
    updated_at: int
    user: UserView | None  # the linked user, shown whole


def user_view(conn: Connection, db: Database, cipher: Cipher, *, env_id: int, user_id: str) -> UserView:
    """Everything magpie knows about a user: properties, consents, masked phone, devices."""
    row = db.fetchone_as(
        conn,
        f"SELECT {_PROFILE} FROM profiles WHERE env_id = ? AND kind = ? AND ident = ?",
        (env_id, USER, user_id),
        _ProfileRow,
    )
    devices = db.fetchall_as(
        conn,
        f"SELECT ident, {_PROFILE} FROM profiles WHERE env_id = ? AND kind = ? AND linked_user = ? ORDER BY ident",
        (env_id, DEVICE, user_id),
        _LinkedDeviceRow,
    )
    if row is None and not devices:
        raise NotFound(f"no user '{user_id}' in this environment")
    properties: dict[str, Any] = {}
    crm: dict[str, Any] = {}
    phone = None
    created = updated = None
    if row is not None:
        properties, crm = _decode(row.properties), _decode(row.crm)
        phone = mask(cipher.decrypt(bytes(row.phone_enc))) if row.phone_enc is not None else None
        created, updated = row.created_at, row.updated_at
    return UserView(
        user_id=user_id,
        properties=properties,
        consents=_consents(crm),
        phone_number=phone,
        devices=[
            LinkedDevice(d.ident, _decode(d.properties), d.updated_at, _tokens(conn, db, env_id, d.ident))
            for d in devices
        ],
        created_at=created,
        updated_at=updated,
    )


def device_view(conn: Connection, db: Database, cipher: Cipher, *, env_id: int, device_id: str) -> DeviceView:
    """A device: its linked user (shown whole) or its anonymous profile."""
    row = db.fetchone_as(
        conn,
        f"SELECT {_PROFILE} FROM profiles WHERE env_id = ? AND kind = ? AND ident = ?",
        (env_id, DEVICE, device_id),
        _ProfileRow,
    )
    if row is None:
        raise NotFound(f"no device '{device_id}' in this environment")
    return DeviceView(
        device_id=device_id,
        linked_user_id=row.linked_user,
        properties=_decode(row.properties),
        consents=_consents(_decode(row.crm)),
        push_tokens=_tokens(conn, db, env_id, device_id),
        created_at=row.created_at,
        updated_at=row.updated_at,
        user=None if row.linked_user is None else user_view(conn, db, cipher, env_id=env_id, user_id=row.linked_user),
    )


def reconfirmations_due(
    conn: Connection, db: Database, *, env_id: int, channels: tuple[str, ...], now_ms: int, within_ms: int, limit: int
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
