"""Writer jobs for the profile endpoints, and the identity rules they share.

Each job is built on the event loop from a validated request and run by the group-commit
writer inside its batch transaction. ``profile_keys`` lets the writer load and lock every
profile of a batch in one ordered query.
"""

from __future__ import annotations

from typing import Any

from magpie.domain import consent
from magpie.domain.identity import DEVICE, USER, merge_anonymous, merge_crm
from magpie.domain.operations import Operation, apply_operations
from magpie.domain.requests import parse_properties
from magpie.errors import InvalidApiKey
from magpie.store.tx import ProfileRow, Tx


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
        if self.phone is None:
            if target.phone_enc is not None:
                tx.update(target, phone_enc=None)
            return
        tx.update(target, phone_enc=tx.secret.encrypt(self.phone))
