"""API-key authentication with a per-process cache, and per-key rate limiting.

A cached key saves a database read per request; it cannot outlive a revocation, because
every write re-checks its key inside the writer's transaction (``Tx.key_env``) and a
revoked key drops out of the cache there. Reads check the database directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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


class Authenticator:
    """Turn a raw key into ``(key_hash, env_id)`` or raise the Hackle error for it."""

    def __init__(
        self,
        *,
        reader: Reader,
        rate_per_key: float = 0.0,
        burst: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.rate = rate_per_key
        self.burst = float(burst or max(1.0, rate_per_key))
        self.clock = clock
        self._cache: dict[str, tuple[str, int]] = {}
        self._buckets: dict[str, _Bucket] = {}

    def forget_hash(self, key_hash: str) -> None:
        for key, (cached_hash, _) in list(self._cache.items()):
            if cached_hash == key_hash:
                self._cache.pop(key, None)

    def cached_env(self, key: str) -> int | None:
        """The environment of a key this process has already authenticated, without a database read."""
        found = self._cache.get(key)
        return None if found is None else found[1]

    def clear(self) -> None:
        self._cache.clear()

    async def authenticate(self, headers: dict[bytes, bytes], *, sdk: bool = False) -> tuple[str, int]:
        raw = headers.get(API_KEY_HEADER)
        if raw is not None and self.rate <= 0:
            # The hot path: a known key, no rate limit, answered without another coroutine.
            found = self._cache.get(raw.decode("latin-1"))
            if found is not None:
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
        if found is None:
            env_id = await self._lookup(key)
            if env_id is None:
                raise InvalidApiKey()
            found = (hash_secret(key), env_id)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = found
        if self.rate > 0:
            self._take(found[0])
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
