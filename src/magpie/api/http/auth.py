"""API-key authentication with a per-process cache, and per-key rate limiting.

A cached key saves a database read per request. It cannot outlive a revocation by more
than ``key_cache_seconds`` (default 5 s) on any endpoint: each entry is looked up again once
that old, every write re-checks its key inside the writer's transaction (``Tx.key_env``),
where a revoked key drops out of the cache at once, and statistics reads check the
database directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from magpie.errors import ApiKeyNotFound, InvalidApiKey, RateLimited
from magpie.store.accounts import lookup_api_key
from magpie.store.crypto import hash_secret
from magpie.store.reader import Reader

API_KEY_HEADER = b"x-hackle-api-key"
SDK_KEY_HEADER = b"x-hackle-sdk-key"


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class _Authenticated(NamedTuple):
    """A key this process has authenticated: its hash (what rate limits count) and its environment."""

    key_hash: str
    env_id: int


class Authenticator:
    """Turn a raw key into ``(key_hash, env_id)`` or raise the Hackle error for it."""

    def __init__(
        self,
        *,
        reader: Reader,
        rate_per_key: float = 0.0,
        burst: int = 0,
        cache_seconds: float = 5.0,
        failures_per_second: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.rate = rate_per_key
        self.burst = float(burst or max(1.0, rate_per_key))
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.failures = FailedAuthThrottle(rate=failures_per_second, clock=clock)
        self._cache: dict[str, _Authenticated] = {}
        self._expires: dict[str, float] = {}
        self._buckets: dict[str, _Bucket] = {}

    def forget_hash(self, key_hash: str) -> None:
        for key, (cached_hash, _) in list(self._cache.items()):
            if cached_hash == key_hash:
                self._cache.pop(key, None)

    def cached_env(self, key: str) -> int | None:
        """The environment of a key this process has already authenticated, without a database read."""
        found = self._cache.get(key)
        return None if found is None else found.env_id

    def clear(self) -> None:
        self._cache.clear()
        self._expires.clear()

    async def authenticate(self, headers: dict[bytes, bytes], *, sdk: bool = False) -> tuple[str, int]:
        raw = headers.get(API_KEY_HEADER)
        if raw is not None and self.rate <= 0:
            # The hot path: a known key, no rate limit, answered without another coroutine.
            key = raw.decode("latin-1")
            found = self._cache.get(key)
            if found is not None and self._expires[key] > self.clock():
                return found
        if sdk and raw is None:
            raw = headers.get(SDK_KEY_HEADER)
        if raw is None:
            raise ApiKeyNotFound()
        key = raw.decode("latin-1").strip()
        if not key:
            raise ApiKeyNotFound()
        return await self.check(key)

    async def check_read(self, headers: dict[bytes, bytes]) -> int:
        """Authenticate a read straight against the database (no cache): returns the environment."""
        raw = headers.get(API_KEY_HEADER)
        key = raw.decode("latin-1").strip() if raw is not None else ""
        if not key:
            raise ApiKeyNotFound()
        env_id = await self._lookup(key)
        if env_id is None:
            raise InvalidApiKey()
        return env_id

    async def check(self, key: str) -> tuple[str, int]:
        found = self._cache.get(key)
        if found is None or self._expires[key] <= self.clock():
            env_id = await self._lookup(key)
            if env_id is None:
                self._cache.pop(key, None)
                raise InvalidApiKey()
            found = _Authenticated(hash_secret(key), env_id)
            if len(self._cache) > 10_000:
                self._cache.clear()
                self._expires.clear()
            self._cache[key] = found
            self._expires[key] = self.clock() + self.cache_seconds
        if self.rate > 0:
            self._take(found.key_hash)
        return found

    async def _lookup(self, key: str) -> int | None:
        db = self.reader.db
        return await self.reader.read(lambda conn: lookup_api_key(conn, db, key))

    def _take(self, key_hash: str) -> None:
        now = self.clock()
        bucket = self._buckets.get(key_hash)
        if bucket is None:
            bucket = self._buckets[key_hash] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / self.rate
            raise RateLimited(retry_after=max(1, int(wait + 0.999)))
        bucket.tokens -= 1.0


def presented(headers: dict[bytes, bytes]) -> str:
    """The credential a request carries (an API or SDK key, or a bearer token), or ``""``."""
    raw = headers.get(API_KEY_HEADER) or headers.get(SDK_KEY_HEADER)
    if raw is None:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        raw = token if scheme.lower() == b"bearer" else b""
    return raw.decode("latin-1").strip()


class FailedAuthThrottle:
    """Failed authentications per client address and per credential prefix, as token buckets.

    Only failures are throttled: a request is authenticated first, and one whose key or token
    is valid is served whatever other clients sent before it (from the same address, behind the
    same proxy or NAT, or with credentials sharing its prefix). Each failure takes a token from
    the bucket of its address and from that of its credential's prefix (the first 12 characters,
    what listings show); tokens come back at ``rate`` a second up to ``4 * rate``. A failure
    while either bucket is empty is answered ``429 RATE_LIMITED`` with ``Retry-After`` instead
    of ``401``. ``rate`` 0 turns the throttle off.

    >>> throttle = FailedAuthThrottle(rate=1.0, clock=lambda: 0.0)
    >>> [throttle.failed(address="10.0.0.1", credential="mgp_guess") is None for _ in range(5)]
    [True, True, True, True, False]
    >>> throttle.failed(address="10.0.0.2", credential="mgp_other") is None  # another address, another prefix
    True
    >>> throttle.failed(address="10.0.0.3", credential="mgp_guess") is None  # the prefix is out of tokens
    False
    """

    PREFIX = 12

    def __init__(self, *, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = 4.0 * rate
        self.clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, kind: str, value: str, now: float) -> _Bucket:
        bucket = self._buckets.get((kind, value))
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            bucket = self._buckets[(kind, value)] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        return bucket

    def failed(self, *, address: str | None, credential: str = "") -> RateLimited | None:
        """Count one failed authentication: the error to answer instead of 401 when over the budget."""
        if self.rate <= 0:
            return None
        now = self.clock()
        buckets = []
        if address:
            buckets.append(("address", self._bucket("address", address, now)))
        if credential:
            buckets.append(("credential prefix", self._bucket("prefix", credential[: self.PREFIX], now)))
        for what, bucket in buckets:
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / self.rate
                return RateLimited(
                    f"too many failed authentications from this {what}; retry later",
                    retry_after=max(1, int(wait + 0.999)),
                )
        for _, bucket in buckets:
            bucket.tokens -= 1.0
        return None
