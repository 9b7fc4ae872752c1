"""Settings, read once from ``MAGPIE_*`` environment variables and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    return default if raw in (None, "") else int(raw)


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    return default if raw in (None, "") else float(raw)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one magpie process.

    >>> Settings(data_dir=Path("/tmp/m")).database_url
    'sqlite:////tmp/m/magpie.db'
    """

    data_dir: Path = Path(".magpie")
    database_url_override: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1 << 20
    # Group commit: a batch is at most this many requests in one transaction.
    batch_max: int = 512
    # Requests per second per API key; 0 disables rate limiting.
    rate_limit_per_key: float = 0.0
    rate_limit_burst: int = 0
    # In-process dispatch workers started by `magpie serve` (0: the API only).
    workers: int = 1
    worker_concurrency: int = 64
    lease_seconds: float = 30.0
    poll_interval: float = 0.2
    max_delivery_attempts: int = 6
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    provider_timeout_seconds: float = 10.0
    # How often a worker asks polled gateways (NHN Cloud) for the final result of accepted messages.
    report_poll_seconds: float = 60.0
    event_retention_days: int = 365
    # How often each API process purges events older than the retention (0 or less days: never).
    event_purge_interval_seconds: float = 3600.0
    secret_key: str | None = None
    log_level: str = "info"
    bootstrap: bool = True
    # "process": the group-commit writer runs in a child process (what `magpie serve` uses);
    # "thread": on a thread of this process (embedding, tests, CLI).
    writer: str = "thread"
    # Freeze what start-up allocated out of the garbage collector's sight (a server process does
    # this once; an embedding process that builds many apps should not).
    freeze_gc: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"sqlite:///{self.data_dir.resolve() / 'magpie.db'}"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        return cls(
            data_dir=Path(e.get("MAGPIE_DATA_DIR", ".magpie")),
            database_url_override=e.get("MAGPIE_DATABASE_URL") or None,
            host=e.get("MAGPIE_HOST", "127.0.0.1"),
            port=_int(e, "MAGPIE_PORT", 8080),
            max_body_bytes=_int(e, "MAGPIE_MAX_BODY_BYTES", 1 << 20),
            batch_max=_int(e, "MAGPIE_BATCH_MAX", 512),
            rate_limit_per_key=_float(e, "MAGPIE_RATE_LIMIT", 0.0),
            rate_limit_burst=_int(e, "MAGPIE_RATE_LIMIT_BURST", 0),
            workers=_int(e, "MAGPIE_WORKERS", 1),
            worker_concurrency=_int(e, "MAGPIE_WORKER_CONCURRENCY", 64),
            lease_seconds=_float(e, "MAGPIE_LEASE_SECONDS", 30.0),
            poll_interval=_float(e, "MAGPIE_POLL_INTERVAL", 0.2),
            max_delivery_attempts=_int(e, "MAGPIE_MAX_DELIVERY_ATTEMPTS", 6),
            retry_base_seconds=_float(e, "MAGPIE_RETRY_BASE_SECONDS", 0.5),
            retry_max_seconds=_float(e, "MAGPIE_RETRY_MAX_SECONDS", 60.0),
            provider_timeout_seconds=_float(e, "MAGPIE_PROVIDER_TIMEOUT", 10.0),
            report_poll_seconds=_float(e, "MAGPIE_REPORT_POLL_SECONDS", 60.0),
            event_retention_days=_int(e, "MAGPIE_EVENT_RETENTION_DAYS", 365),
            event_purge_interval_seconds=_float(e, "MAGPIE_EVENT_PURGE_INTERVAL", 3600.0),
            secret_key=e.get("MAGPIE_SECRET_KEY") or None,
            log_level=e.get("MAGPIE_LOG_LEVEL", "info"),
            bootstrap=e.get("MAGPIE_BOOTSTRAP", "1") not in ("0", "false", "no"),
            writer=e.get("MAGPIE_WRITER", "process"),
            freeze_gc=True,
        )
