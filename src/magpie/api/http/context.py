"""What every handler needs, built once per app in the lifespan and passed down."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from magpie.api.http.auth import Authenticator
from magpie.config import Settings
from magpie.metrics import Metrics
from magpie.runtime import Runtime
from magpie.store.crypto import Cipher
from magpie.store.db import Connection, Database
from magpie.store.writer import Writer

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """The process's runtime, and API-key authentication on top of it."""

    runtime: Runtime
    auth: Authenticator

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def db(self) -> Database:
        return self.runtime.db

    @property
    def writer(self) -> Writer:
        return self.runtime.writer

    @property
    def cipher(self) -> Cipher:
        return self.runtime.cipher

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    def clock(self) -> float:
        return self.runtime.clock()

    def wake_workers(self) -> None:
        """Tell in-process workers new work is waiting, instead of letting them poll for it."""
        self.runtime.wake_workers()

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader thread, inside one read transaction."""
        return await self.runtime.reader.read(fn)
