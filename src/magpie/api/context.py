"""What every handler needs, built once per app in the lifespan and passed down."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from magpie.api.auth import Authenticator
from magpie.config import Settings
from magpie.store.crypto import Cipher
from magpie.store.db import Database
from magpie.store.writer import Writer


@dataclass
class Context:
    settings: Settings
    db: Database
    writer: Writer
    auth: Authenticator
    executor: ThreadPoolExecutor
    cipher: Cipher
    clock: Callable[[], float] = time.time
    extras: dict[str, Any] = field(default_factory=dict)
    wakers: list[Callable[[], None]] = field(default_factory=list)

    def wake_workers(self) -> None:
        """Tell in-process workers new work is waiting, instead of letting them poll for it."""
        for wake in self.wakers:
            wake()

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(conn)`` on a reader thread, inside one read transaction."""
        from magpie.api.auth import read_in

        return await read_in(self.executor, self.db, fn)
